//! A filter that tags text messages `A>x` upstream-bound and `A<x`
//! client-bound. `tag-b` is the same filter with tag `B`.

const TAG: &str = "A";

include!("tagger.rs");
