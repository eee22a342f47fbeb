DROP TABLE sweep_watermarks;
