//! Small things every room of the house uses, one of each: the clocks, random ids and keys,
//! and the rule for locks. Nothing here knows the product.

pub mod clock;
pub mod id;
pub mod lock;
