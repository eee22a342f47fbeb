//! `OrderActivitiesImpl`: the Temporal activities that implement the workflow's contract.
//!
//! Each activity is a thin wrapper: one store function, one transaction, and the error
//! classification of `error::into_activity_error` (transient errors retried, business errors
//! non-retryable). The spans carry `order_id`. No logic lives here that a test could not reach
//! by calling the store function directly.

use crate::Db;
use crate::error::into_activity_error;
use crate::funds::{POINTS, WALLET};
use orderflow_workflows::contract::markers;
use orderflow_workflows::model::*;
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// The activity implementations, sharing one database pool.
pub struct OrderActivitiesImpl {
    pub db: Db,
}

impl OrderActivitiesImpl {
    pub fn new(db: Db) -> Self {
        OrderActivitiesImpl { db }
    }
}

/// The order id an activity input is about, for its tracing span.
pub trait AboutOrder {
    fn order_id(&self) -> &str;
}

macro_rules! about_order {
    ($($t:ty => |$v:ident| $e:expr),* $(,)?) => { $(impl AboutOrder for $t { fn order_id(&self) -> &str { let $v = self; $e } })* };
}
about_order! {
    ReserveStock => |x| &x.order_id,
    ReserveCoupon => |x| &x.order_id,
    ReserveFunds => |x| &x.order_id,
    OrderRef => |x| &x.order_id,
    RecordOrder => |x| &x.order.order_id,
    MarkPaid => |x| &x.order_id,
    MarkCancelled => |x| &x.order_id,
    RecordUnappliedPayment => |x| &x.order_id,
}

#[activities]
impl OrderActivitiesImpl {
    #[activity(definition = markers::ReserveStock)]
    #[tracing::instrument(name = "reserve_stock", skip_all, fields(order_id = %input.order_id()))]
    pub async fn reserve_stock(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: ReserveStock,
    ) -> Result<Reservation, ActivityError> {
        crate::stock::reserve(&self.db, &input)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::ReserveCoupon)]
    #[tracing::instrument(name = "reserve_coupon", skip_all, fields(order_id = %input.order_id()))]
    pub async fn reserve_coupon(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: ReserveCoupon,
    ) -> Result<Reservation, ActivityError> {
        crate::coupons::reserve(&self.db, &input)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::ReservePoints)]
    #[tracing::instrument(name = "reserve_points", skip_all, fields(order_id = %input.order_id()))]
    pub async fn reserve_points(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: ReserveFunds,
    ) -> Result<Reservation, ActivityError> {
        crate::funds::reserve(&self.db, POINTS, &input)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::ReserveWallet)]
    #[tracing::instrument(name = "reserve_wallet", skip_all, fields(order_id = %input.order_id()))]
    pub async fn reserve_wallet(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: ReserveFunds,
    ) -> Result<Reservation, ActivityError> {
        crate::funds::reserve(&self.db, WALLET, &input)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::ReleaseStock)]
    #[tracing::instrument(name = "release_stock", skip_all, fields(order_id = %input.order_id()))]
    pub async fn release_stock(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: OrderRef,
    ) -> Result<(), ActivityError> {
        crate::stock::release(&self.db, &input.order_id)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::ReleaseCoupon)]
    #[tracing::instrument(name = "release_coupon", skip_all, fields(order_id = %input.order_id()))]
    pub async fn release_coupon(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: OrderRef,
    ) -> Result<(), ActivityError> {
        crate::coupons::release(&self.db, &input.order_id)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::ReleasePoints)]
    #[tracing::instrument(name = "release_points", skip_all, fields(order_id = %input.order_id()))]
    pub async fn release_points(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: OrderRef,
    ) -> Result<(), ActivityError> {
        crate::funds::release(&self.db, POINTS, &input.order_id)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::ReleaseWallet)]
    #[tracing::instrument(name = "release_wallet", skip_all, fields(order_id = %input.order_id()))]
    pub async fn release_wallet(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: OrderRef,
    ) -> Result<(), ActivityError> {
        crate::funds::release(&self.db, WALLET, &input.order_id)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::CaptureStock)]
    #[tracing::instrument(name = "capture_stock", skip_all, fields(order_id = %input.order_id()))]
    pub async fn capture_stock(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: OrderRef,
    ) -> Result<(), ActivityError> {
        crate::stock::capture(&self.db, &input.order_id)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::CaptureCoupon)]
    #[tracing::instrument(name = "capture_coupon", skip_all, fields(order_id = %input.order_id()))]
    pub async fn capture_coupon(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: OrderRef,
    ) -> Result<(), ActivityError> {
        crate::coupons::capture(&self.db, &input.order_id)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::CapturePoints)]
    #[tracing::instrument(name = "capture_points", skip_all, fields(order_id = %input.order_id()))]
    pub async fn capture_points(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: OrderRef,
    ) -> Result<(), ActivityError> {
        crate::funds::capture(&self.db, POINTS, &input.order_id)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::CaptureWallet)]
    #[tracing::instrument(name = "capture_wallet", skip_all, fields(order_id = %input.order_id()))]
    pub async fn capture_wallet(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: OrderRef,
    ) -> Result<(), ActivityError> {
        crate::funds::capture(&self.db, WALLET, &input.order_id)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::RecordOrder)]
    #[tracing::instrument(name = "record_order", skip_all, fields(order_id = %input.order_id()))]
    pub async fn record_order(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RecordOrder,
    ) -> Result<(), ActivityError> {
        crate::orders::record(&self.db, &input)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::MarkPaid)]
    #[tracing::instrument(name = "mark_paid", skip_all, fields(order_id = %input.order_id()))]
    pub async fn mark_paid(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: MarkPaid,
    ) -> Result<(), ActivityError> {
        crate::orders::mark_paid(&self.db, &input)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::MarkCancelled)]
    #[tracing::instrument(name = "mark_cancelled", skip_all, fields(order_id = %input.order_id()))]
    pub async fn mark_cancelled(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: MarkCancelled,
    ) -> Result<(), ActivityError> {
        crate::orders::mark_cancelled(&self.db, &input)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::RecordUnappliedPayment)]
    #[tracing::instrument(name = "record_unapplied_payment", skip_all, fields(order_id = %input.order_id()))]
    pub async fn record_unapplied_payment(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RecordUnappliedPayment,
    ) -> Result<(), ActivityError> {
        crate::orders::record_unapplied_payment(&self.db, &input)
            .await
            .map_err(into_activity_error)
    }
}
