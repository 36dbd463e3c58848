//! Pictures the pipeline shows besides the movie and the webcam: slates and static layers.
//! They are drawn to RGBA with the `image` crate, off the video thread, only when they change.

pub mod frames;
pub mod slate;
