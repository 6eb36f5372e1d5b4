//! The `tag-a` filter with tag `B`: a second version that behaves differently.

const TAG: &str = "B";

include!("../../tag-a/src/tagger.rs");
