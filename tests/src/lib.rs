
pub mod privilege;
pub mod lab;
