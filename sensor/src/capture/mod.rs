//! Capture sources. Each produces [`crate::event::PacketEvent`]s for the shared pipeline.

pub mod record;
pub mod xdp;
