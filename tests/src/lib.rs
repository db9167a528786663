//! Test support: lab namespaces, privilege gate, and the synthetic capture generator.

pub mod lab;
pub mod privilege;
pub mod synth;
