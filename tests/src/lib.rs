
pub mod privilege;
