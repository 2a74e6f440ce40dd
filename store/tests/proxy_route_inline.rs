//! Proxy routing answered on the event loop (`Executor::execute_inline` of a front-end
//! [`Node`]): only when every step is cheap and cannot block, and then with the same
//! answer the worker pool would give; everything else is left to the pool.

use std::fs;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tidegate_core::secret::Secret;
use tidegate_core::{Failure, Reply, Request, Route, Service};
use tidegate_store::Executor;
use tidegate_store::local::LocalStore;
use tidegate_store::maildir::MaildirStore;
use tidegate_store::node::Node;
use tidegate_store::password::{Params, hash_argon2id_with};
use tidegate_store::router::{Router, RouterConfig};
use tidegate_store::users::{CacheConfig, CachedDirectory, UserDirectory, UsersFile};
use tidegate_store::{LoginPenalty, PenaltyConfig};

const CLIENT: [u8; 4] = [192, 0, 2, 7];

/// A users file with a `{PLAIN}` user on an IP back-end, one on a named back-end, one
/// with `nologin`, one without `tohost` and one with a (cheap) Argon2id hash.
fn users_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let argon = hash_argon2id_with(Params::new(8, 1, 1, None).unwrap(), b"slow");
    let path = dir.path().join("users");
    fs::write(
        &path,
        format!(
            "plain@example.com {{PLAIN}}pw tohost=127.0.0.2\n\
             named@example.com {{PLAIN}}pw tohost=back.example.com\n\
             off@example.com {{PLAIN}}pw tohost=127.0.0.2 nologin\n\
             nohost@example.com {{PLAIN}}pw\n\
             hashed@example.com {argon} tohost=127.0.0.3\n"
        ),
    )
    .unwrap();
    path
}

fn node_over(
    dir: &tempfile::TempDir,
    users: Arc<dyn UserDirectory>,
    penalty: PenaltyConfig,
) -> Node {
    let maildir = MaildirStore::new(dir.path().join("mail"), false, "front.test");
    let store = LocalStore::new(users, maildir).with_penalty(LoginPenalty::new(penalty));
    let router = Router::new(RouterConfig {
        ports: tidegate_store::router::BackendPorts {
            pop3: 1110,
            ..Default::default()
        },
        ..RouterConfig::default()
    });
    Node::new(Some(Arc::new(router)), store)
}

fn route(user: &str, password: &str) -> Request {
    Request::Route {
        user: user.into(),
        password: Secret::new(password.as_bytes().to_vec()),
        client: IpAddr::from(CLIENT),
        service: Service::Pop3,
    }
}

fn backend_of(reply: &Reply) -> String {
    match reply {
        Reply::Routed(Route { account, backend }) => {
            format!("{} {:?}", account.0, backend.addrs)
        }
        other => panic!("not routed: {other:?}"),
    }
}

#[test]
fn a_plain_password_and_an_ip_backend_are_answered_inline_like_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let users = Arc::new(UsersFile::open(users_file(&dir)).unwrap());
    let node = node_over(&dir, users, PenaltyConfig::default());
    let inline = node
        .execute_inline(&route("Plain@Example.com", "pw"))
        .expect("answered inline");
    let pooled = node.execute(route("Plain@Example.com", "pw"));
    assert_eq!(backend_of(&inline), "plain@example.com [127.0.0.2:1110]");
    assert_eq!(backend_of(&inline), backend_of(&pooled));
}

#[test]
fn failures_names_slow_hashes_and_nologin_are_left_to_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let users = Arc::new(UsersFile::open(users_file(&dir)).unwrap());
    let node = node_over(&dir, users, PenaltyConfig::default());
    for (user, password) in [
        ("plain@example.com", "wrong"),
        ("nobody@example.com", "pw"),
        ("named@example.com", "pw"),
        ("off@example.com", "pw"),
        ("nohost@example.com", "pw"),
        ("hashed@example.com", "slow"),
    ] {
        assert!(
            node.execute_inline(&route(user, password)).is_none(),
            "{user} answered inline"
        );
    }
    // The pool gives the full answers.
    assert!(matches!(
        node.execute(route("plain@example.com", "wrong")),
        Reply::Failed(Failure::Denied)
    ));
    assert!(matches!(
        node.execute(route("off@example.com", "pw")),
        Reply::Failed(Failure::Disabled)
    ));
    assert_eq!(
        backend_of(&node.execute(route("hashed@example.com", "slow"))),
        "hashed@example.com [127.0.0.3:1110]"
    );
}

#[test]
fn a_slow_hash_is_answered_inline_once_the_cache_remembers_it() {
    let dir = tempfile::tempdir().unwrap();
    let file: Arc<dyn UserDirectory> = Arc::new(UsersFile::open(users_file(&dir)).unwrap());
    let cached = Arc::new(CachedDirectory::new(file, CacheConfig::default()));
    let node = node_over(&dir, cached, PenaltyConfig::default());
    assert!(
        node.execute_inline(&route("hashed@example.com", "slow"))
            .is_none()
    );
    backend_of(&node.execute(route("hashed@example.com", "slow")));
    let inline = node
        .execute_inline(&route("hashed@example.com", "slow"))
        .expect("cache hit answered inline");
    assert_eq!(backend_of(&inline), "hashed@example.com [127.0.0.3:1110]");
    // A different password misses the cache and goes to the pool.
    assert!(
        node.execute_inline(&route("hashed@example.com", "other"))
            .is_none()
    );
}

#[test]
fn a_client_under_the_login_penalty_is_left_to_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let users = Arc::new(UsersFile::open(users_file(&dir)).unwrap());
    let node = node_over(
        &dir,
        users,
        PenaltyConfig {
            max_failures: 2,
            ..PenaltyConfig::default()
        },
    );
    for _ in 0..2 {
        node.execute(route("plain@example.com", "wrong"));
    }
    assert!(
        node.execute_inline(&route("plain@example.com", "pw"))
            .is_none()
    );
    assert!(matches!(
        node.execute(route("plain@example.com", "pw")),
        Reply::Failed(Failure::Temporary(_))
    ));
}

#[test]
fn a_users_file_due_for_its_change_check_is_left_to_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let users = Arc::new(
        UsersFile::open(users_file(&dir))
            .unwrap()
            .with_check_interval(Duration::ZERO),
    );
    let node = node_over(&dir, users, PenaltyConfig::default());
    assert!(
        node.execute_inline(&route("plain@example.com", "pw"))
            .is_none()
    );
    backend_of(&node.execute(route("plain@example.com", "pw")));
}
