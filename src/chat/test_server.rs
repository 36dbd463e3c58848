//! (placeholder until the test server lands)
