//! The reliability and security suite (docs/RELIABILITY.md): network faults
//! through a fault-injecting loopback proxy, crashes, power loss, disk
//! trouble, a concurrency soak, lifecycle, changes at the origin, hostile
//! input and security.
//!
//! Each test records what it tried and the outcomes (see `report`);
//! `scripts/reliability` runs the suite and renders the table in
//! docs/RELIABILITY.md from those records. Child processes (readers to kill,
//! soak workers, readers in a private mount namespace) are this binary
//! again, running `worker::entry`.

mod bounds;
mod crashes;
mod disk;
mod faults;
mod lifecycle;
mod mappings;
mod origin;
mod peers;
mod power;
mod report;
mod security;
mod soak;
mod worker;
