//! Small things every room of the house uses, one of each: the clocks, random ids and keys,
//! the rule for locks, and giving freed memory back. Nothing here knows the product.

pub mod clock;
pub mod id;
pub mod lock;
pub mod trim;
