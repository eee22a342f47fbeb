DROP TABLE needs_attention;
