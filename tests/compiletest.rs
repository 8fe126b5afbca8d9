//! Compile-fail cases for `#[derive(IpcMessage)]`: one file per diagnostic
//! under `tests/ui/`, each with the `.stderr` the compiler must print.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("../tests/ui/*.rs");
}
