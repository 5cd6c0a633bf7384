//! Tests of the protocol codec, by concern.

mod limits;
mod robustness;
mod round_trip;
pub(crate) mod strategies;
