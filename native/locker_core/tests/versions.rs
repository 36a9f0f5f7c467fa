//! One version everywhere: the crates (workspace), the Erlang application,
//! the Mix project, and the version the Erlang side of the NIF expects
//! (the NIF refuses to load for another).

fn read(path: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    std::fs::read_to_string(format!("{root}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn versions_agree() {
    let v = env!("CARGO_PKG_VERSION");
    assert!(
        read("erlang/src/locker_nif.erl").contains(&format!("-define(NIF_VERSION, \"{v}\").")),
        "locker_nif.erl's NIF_VERSION is not {v}"
    );
    assert!(
        read("erlang/src/locker.app.src").contains(&format!("{{vsn, \"{v}\"}}")),
        "locker.app.src's vsn is not {v}"
    );
    assert!(
        read("mix.exs").contains(&format!("version: \"{v}\"")),
        "mix.exs's version is not {v}"
    );
}
