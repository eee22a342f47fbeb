//! The two account tables whose funds an order can hold (wallet and points): one descriptor
//! each, so that one piece of SQL serves both. Only static names go into SQL from here.

use crate::error::Entity;
use orderflow_workflows::model::Resource;

/// An account table whose funds orders can hold.
#[derive(Debug, Clone, Copy)]
pub struct Account {
    pub resource: Resource,
    pub table: &'static str,
    /// The column that holds reserved funds.
    pub held: &'static str,
    /// The refusal code when the balance is short.
    pub short_code: &'static str,
    /// The account in messages ("wallet balance").
    pub noun: &'static str,
    /// What a missing account is.
    pub entity: Entity,
}

pub const WALLET: Account = Account {
    resource: Resource::Wallet,
    table: "wallets",
    held: "frozen",
    short_code: "insufficient_wallet_balance",
    noun: "wallet balance",
    entity: Entity::Wallet,
};

pub const POINTS: Account = Account {
    resource: Resource::Points,
    table: "points_accounts",
    held: "reserved",
    short_code: "insufficient_points",
    noun: "points",
    entity: Entity::Points,
};
