//! placeholder
use reqwest as _;
use serenity as _;
#[test]
fn placeholder() {}
