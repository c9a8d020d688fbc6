//! The cluster's account store and share grants (issue 19) against a real PostgreSQL 15:
//! two stores on one database stand for two nodes. A device enrolled on one node logs
//! in on the other; of two nodes redeeming one token at once exactly one enrols a
//! device; a revocation, a cancelled token, a quota or a share recorded on one node
//! holds on the other; the embedded store and the cluster's decide the same on the same
//! requests; a database outage is an error naming PostgreSQL and its config key (never
//! a refusal of the device), and the stores work again once it is back.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use filesync_proto::auth::{AuthRequest, Refusal, Secret};
use filesync_proto::{AccountName, DeviceId, FolderName};
use filesync_tests::pg::Postgres;
use filesync_tests::poll_until;
use filesyncd::server::accounts::{
    AccountStore, Accounts, Cancelled, DEFAULT_INVITE_TTL, Maker, OPEN_ACCOUNT, QuotaSetting,
};
use filesyncd::server::cluster::accounts::PgAccounts;
use filesyncd::server::cluster::pool::Db;
use filesyncd::server::cluster::shares::PgShares;
use filesyncd::server::shares::ShareTable;
use tokio::runtime::Runtime;

/// Two nodes' stores on one fresh database, and the runtime their connections live on.
struct Nodes {
    pg: Postgres,
    runtime: Runtime,
    dbs: [Db; 2],
    one: PgAccounts,
    two: PgAccounts,
}

impl Nodes {
    /// `None` when the test is skipped (see [`Postgres::start_or_skip`]).
    fn start(db: &str) -> Option<Nodes> {
        let pg = Postgres::start_or_skip()?;
        let url = pg.create_db(db);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let open = || {
            let config = url.parse().expect("the test's URL");
            let tls = filesyncd::server::cluster::pgtls::connector(None).expect("the connector");
            runtime
                .block_on(Db::open(config, tls))
                .expect("the pool opens")
        };
        let dbs = [open(), open()];
        Some(Nodes {
            one: PgAccounts::new(dbs[0].clone()),
            two: PgAccounts::new(dbs[1].clone()),
            dbs,
            pg,
            runtime,
        })
    }

    fn shares(&self, node: usize) -> PgShares {
        PgShares::new(self.dbs[node].clone())
    }
}

fn name(s: &str) -> AccountName {
    AccountName::new(s).unwrap()
}

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

/// A peer address of its own per `n`, so that expected failures never add up to a
/// lockout.
fn peer(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, n))
}

fn redeem(secret: &Secret, device: &str) -> AuthRequest {
    AuthRequest::Redeem {
        secret: secret.clone(),
        device: id(device),
        device_name: "laptop".into(),
    }
}

fn login(device: &DeviceId, secret: &Secret) -> AuthRequest {
    AuthRequest::Credential {
        device: device.clone(),
        secret: secret.clone(),
    }
}

fn admin_token(store: &dyn AccountStore, account: &str) -> Secret {
    store
        .invite(&name(account), DEFAULT_INVITE_TTL, &Maker::Admin)
        .unwrap()
}

/// The same requests and what every store must answer them, as one check per store.
fn decides_as_the_embedded_store(store: &dyn AccountStore) {
    let token = admin_token(store, "alice");
    let admitted = store
        .authenticate(&redeem(&token, "D1"), false, peer(1))
        .unwrap()
        .unwrap();
    assert_eq!(
        (admitted.account.as_str(), admitted.device.as_str()),
        ("alice", "D1")
    );
    let credential = admitted.credential.unwrap();
    let expired = store
        .invite(&name("bob"), Duration::ZERO, &Maker::Admin)
        .unwrap();
    let wrong = Secret([0; 32]);
    let register = AuthRequest::Register {
        device: id("D1"),
        device_name: "pc".into(),
    };
    for (request, open, expected) in [
        (redeem(&token, "D2"), false, Err(Refusal::TokenUsed)),
        (redeem(&expired, "D2"), false, Err(Refusal::TokenExpired)),
        (redeem(&wrong, "D2"), false, Err(Refusal::TokenUnknown)),
        (
            login(&id("D1"), &wrong),
            false,
            Err(Refusal::CredentialUnknown),
        ),
        (
            login(&id("D9"), &credential),
            false,
            Err(Refusal::CredentialUnknown),
        ),
        (register.clone(), false, Err(Refusal::RegistrationClosed)),
    ] {
        let decided = store.authenticate(&request, open, peer(2)).unwrap();
        assert_eq!(decided.map(|a| a.device), expected, "{request:?}");
    }
    let again = store
        .authenticate(&login(&id("D1"), &credential), false, peer(2))
        .unwrap()
        .unwrap();
    assert_eq!(again.account, name("alice"));
    // An id that is taken gets a new one; open registration enrols into its account.
    let open = store
        .authenticate(&register, true, peer(3))
        .unwrap()
        .unwrap();
    assert_eq!(open.account.as_str(), OPEN_ACCOUNT);
    assert_ne!(open.device, id("D1"));
    let bad_name = AuthRequest::Register {
        device: id("D5"),
        device_name: String::new(),
    };
    let e = store.authenticate(&bad_name, true, peer(3)).unwrap_err();
    assert!(e.to_string().contains("device name"), "{e:#}");

    let listed = store.accounts().unwrap();
    let names: Vec<_> = listed.iter().map(|a| a.account.as_str()).collect();
    assert_eq!(names, ["alice", "bob", OPEN_ACCOUNT]);
    assert_eq!(listed[0].devices.len(), 1);
    assert_eq!(listed[0].devices[0].device, "D1");
    assert!(listed[1].devices.is_empty());

    assert_eq!(store.revoke(&id("D1")).unwrap(), Some(0));
    assert_eq!(store.revoke(&id("nobody")).unwrap(), None);
    assert_eq!(
        store
            .authenticate(&login(&id("D1"), &credential), false, peer(4))
            .unwrap(),
        Err(Refusal::DeviceRevoked)
    );
    let e = store
        .invite(&name("x"), Duration::from_secs(u64::MAX), &Maker::Admin)
        .unwrap_err();
    assert!(e.to_string().contains("choose a shorter --expires"), "{e}");
}

#[test]
fn the_cluster_store_decides_as_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = Accounts::open(&dir.path().join("accounts.db")).unwrap();
    decides_as_the_embedded_store(&embedded);
    let Some(nodes) = Nodes::start("decides") else {
        return;
    };
    decides_as_the_embedded_store(&nodes.one);
}

#[test]
fn a_device_enrolled_on_one_node_logs_in_on_the_other_and_its_revocation_holds_on_both() {
    let Some(nodes) = Nodes::start("enrol") else {
        return;
    };
    let (one, two) = (&nodes.one, &nodes.two);
    let token = admin_token(one, "alice");
    let admitted = two
        .authenticate(&redeem(&token, "D1"), false, peer(1))
        .unwrap()
        .unwrap();
    let credential = admitted.credential.clone().unwrap();
    let on_one = one
        .authenticate(&login(&id("D1"), &credential), false, peer(1))
        .unwrap()
        .unwrap();
    assert_eq!((on_one.account, on_one.device), (name("alice"), id("D1")));
    assert_eq!(
        one.authenticate(&redeem(&token, "D2"), false, peer(2))
            .unwrap(),
        Err(Refusal::TokenUsed)
    );

    // Tokens the device makes on node one; it is revoked on node two.
    let device = Maker::Device(id("D1"));
    let alice = name("alice");
    let made = one.invite(&alice, DEFAULT_INVITE_TTL, &device).unwrap();
    let by_admin = admin_token(two, "alice");
    let listed = two.invites().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed
            .iter()
            .any(|i| i.made_by == "device" && i.device.as_deref() == Some("D1"))
    );
    assert_eq!(two.revoke(&id("D1")).unwrap(), Some(1));
    assert_eq!(
        one.authenticate(&login(&id("D1"), &credential), false, peer(3))
            .unwrap(),
        Err(Refusal::DeviceRevoked)
    );
    assert_eq!(
        one.authenticate(&redeem(&made, "D3"), false, peer(3))
            .unwrap(),
        Err(Refusal::TokenExpired),
        "the revoked device's token was cancelled"
    );
    let refused = one.invite(&alice, DEFAULT_INVITE_TTL, &device).unwrap_err();
    assert!(
        refused.to_string().contains("device D1 is revoked"),
        "{refused}"
    );
    let listed = one.invites().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].made_by, "admin");
    let accounts = one.accounts().unwrap();
    assert!(accounts[0].devices[0].revoked);

    // Cancelling by id, on either node.
    assert_eq!(
        two.cancel_invite(&listed[0].id.to_uppercase()).unwrap(),
        Cancelled::Done(alice.clone())
    );
    assert_eq!(
        one.cancel_invite(&listed[0].id).unwrap(),
        Cancelled::NotPending
    );
    for unknown in ["", "nonsense", "0000000000000000"] {
        assert_eq!(one.cancel_invite(unknown).unwrap(), Cancelled::Unknown);
    }
    assert_eq!(
        one.authenticate(&redeem(&by_admin, "D4"), false, peer(4))
            .unwrap(),
        Err(Refusal::TokenExpired)
    );
    let used = admin_token(one, "alice");
    let used_id = one.invites().unwrap()[0].id.clone();
    two.authenticate(&redeem(&used, "D5"), false, peer(5))
        .unwrap()
        .unwrap();
    assert_eq!(
        one.cancel_invite(&used_id).unwrap(),
        Cancelled::Used("D5".into())
    );
}

#[test]
fn a_device_makes_at_most_ten_tokens_an_hour_whichever_nodes_it_asks() {
    let Some(nodes) = Nodes::start("ratelimit") else {
        return;
    };
    let token = admin_token(&nodes.one, "alice");
    nodes
        .one
        .authenticate(&redeem(&token, "D1"), false, peer(1))
        .unwrap()
        .unwrap();
    let (alice, device) = (name("alice"), Maker::Device(id("D1")));
    for i in 0..10 {
        let node = if i % 2 == 0 { &nodes.one } else { &nodes.two };
        node.invite(&alice, DEFAULT_INVITE_TTL, &device).unwrap();
    }
    let refused = nodes
        .two
        .invite(&alice, DEFAULT_INVITE_TTL, &device)
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("made 10 invite tokens within the last hour"),
        "{refused}"
    );
    assert!(
        !refused.contains("PostgreSQL"),
        "a refusal, not an outage: {refused}"
    );
}

#[test]
fn one_token_redeemed_on_two_nodes_at_once_enrols_exactly_one_device() {
    let Some(nodes) = Nodes::start("race") else {
        return;
    };
    const ROUNDS: u8 = 20;
    for round in 0..ROUNDS {
        let token = admin_token(&nodes.one, "carol");
        let start = Barrier::new(2);
        let wins = std::thread::scope(|s| {
            let racers = [&nodes.one, &nodes.two].map(|node| {
                let (token, start) = (&token, &start);
                s.spawn(move || {
                    let device = format!("R{round}");
                    start.wait();
                    node.authenticate(&redeem(token, &device), false, peer(round))
                        .unwrap()
                })
            });
            racers.map(|r| r.join().unwrap())
        });
        let enrolled: Vec<_> = wins.iter().filter(|w| w.is_ok()).collect();
        assert_eq!(enrolled.len(), 1, "round {round}: {wins:?}");
        assert!(
            wins.contains(&Err(Refusal::TokenUsed)),
            "round {round}: {wins:?}"
        );
    }
    let carol = &nodes.two.accounts().unwrap()[0];
    assert_eq!(carol.devices.len(), usize::from(ROUNDS));
    let used = nodes.pg.psql(
        "race",
        "SELECT count(*) FROM invites WHERE used_by IS NOT NULL",
    );
    assert_eq!(used, ROUNDS.to_string());
}

#[test]
fn no_token_a_device_makes_on_one_node_outlives_its_revocation_on_the_other() {
    let Some(nodes) = Nodes::start("revokerace") else {
        return;
    };
    let alice = name("alice");
    for round in 0..5u8 {
        let device = format!("V{round}");
        let token = admin_token(&nodes.two, "alice");
        nodes
            .two
            .authenticate(&redeem(&token, &device), false, peer(round))
            .unwrap()
            .unwrap();
        let maker = Maker::Device(id(&device));
        let start = Barrier::new(2);
        let (made, cancelled) = std::thread::scope(|s| {
            let making = s.spawn(|| {
                start.wait();
                (0..10)
                    .take_while(|_| nodes.one.invite(&alice, DEFAULT_INVITE_TTL, &maker).is_ok())
                    .count()
            });
            let revoking = s.spawn(|| {
                start.wait();
                nodes.two.revoke(&id(&device)).unwrap().unwrap()
            });
            (making.join().unwrap(), revoking.join().unwrap())
        });
        assert_eq!(
            made, cancelled,
            "round {round}: every token made was cancelled"
        );
        let pending = nodes.one.invites().unwrap();
        assert!(
            !pending
                .iter()
                .any(|i| i.device.as_deref() == Some(device.as_str())),
            "round {round}: {pending:?}"
        );
    }
}

#[test]
fn quotas_and_shares_recorded_on_one_node_hold_on_the_other() {
    let Some(nodes) = Nodes::start("quotashares") else {
        return;
    };
    let home = name("home");
    let q = QuotaSetting::Bytes(1 << 20);
    assert!(
        !nodes.one.set_quota(&home, Some(q)).unwrap(),
        "no such account yet"
    );
    admin_token(&nodes.one, "home");
    admin_token(&nodes.one, "bob");
    assert!(nodes.one.set_quota(&home, Some(q)).unwrap());
    assert_eq!(nodes.two.quotas().unwrap().get(&home), Some(&q));
    let unlimited = QuotaSetting::Unlimited;
    assert!(nodes.two.set_quota(&home, Some(unlimited)).unwrap());
    assert_eq!(nodes.one.quotas().unwrap().get(&home), Some(&unlimited));
    assert!(nodes.one.set_quota(&home, None).unwrap());
    assert!(nodes.two.quotas().unwrap().is_empty());

    let (one, two) = (nodes.shares(0), nodes.shares(1));
    let docs = FolderName::new("docs").unwrap();
    assert!(!two.has_folder(&home, &docs).unwrap());
    nodes.pg.psql(
        "quotashares",
        "INSERT INTO folders (account_id, name, epoch, next_seq, last_seq) \
         SELECT id, 'docs', 1, 1, 0 FROM accounts WHERE name = 'home'",
    );
    assert!(two.has_folder(&home, &docs).unwrap());
    assert!(!two.has_folder(&name("bob"), &docs).unwrap());
    let key = (home.clone(), docs.clone(), name("bob"));
    assert_eq!(two.access(&key).unwrap(), None);
    assert_eq!(one.grant(&key, false).unwrap(), Some(false));
    assert_eq!(two.access(&key).unwrap(), Some(false));
    assert_eq!(two.grant(&key, false).unwrap(), Some(false), "same again");
    assert_eq!(two.grant(&key, true).unwrap(), Some(true), "changed");
    assert_eq!(one.access(&key).unwrap(), Some(true));
    let nobody = (home.clone(), docs.clone(), name("carol"));
    assert_eq!(one.grant(&nobody, false).unwrap(), None, "no such account");
    let listed = two.list(Some(&home), None).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (&listed[0].member, listed[0].read_only),
        (&name("bob"), true)
    );
    assert_eq!(one.list(None, Some(&docs)).unwrap(), listed);
    assert!(one.list(Some(&name("bob")), None).unwrap().is_empty());
    assert!(two.revoke(&key).unwrap());
    assert!(!one.revoke(&key).unwrap());
    assert_eq!(one.access(&key).unwrap(), None);
}

#[test]
fn a_postgres_outage_is_an_error_naming_the_key_and_the_stores_recover() {
    let Some(nodes) = Nodes::start("outage") else {
        return;
    };
    let token = admin_token(&nodes.one, "alice");
    let credential = nodes
        .two
        .authenticate(&redeem(&token, "D1"), false, peer(1))
        .unwrap()
        .unwrap()
        .credential
        .unwrap();
    let shares = nodes.shares(1);
    let key = (
        name("alice"),
        FolderName::new("docs").unwrap(),
        name("alice"),
    );
    nodes.pg.stop();
    // The device is not told that its credential is unknown: the session ends with
    // the store's error and the device comes back later.
    named(
        nodes
            .one
            .authenticate(&login(&id("D1"), &credential), false, peer(2))
            .unwrap_err(),
    );
    named(nodes.two.invites().unwrap_err());
    named(nodes.one.revoke(&id("D1")).unwrap_err());
    named(shares.access(&key).unwrap_err());

    nodes.pg.start_again();
    let back = poll_until(Duration::from_secs(30), || {
        nodes
            .one
            .authenticate(&login(&id("D1"), &credential), false, peer(2))
            .map_err(|e| format!("{e:#}"))
    })
    .unwrap();
    assert_eq!(back.unwrap().device, id("D1"));
    assert_eq!(nodes.two.invites().unwrap(), Vec::new());
    assert_eq!(shares.access(&key).unwrap(), None);
}

#[test]
fn the_store_answers_from_the_blocking_pool_and_from_a_runtime_worker() {
    let Some(nodes) = Nodes::start("threads") else {
        return;
    };
    admin_token(&nodes.one, "alice");
    let store = Arc::new(PgAccounts::new(nodes.dbs[1].clone()));
    let (pooled, worker) = nodes.runtime.block_on(async {
        // As the sessions and the control socket call it (`Server::off_runtime`), and
        // as start-up reads the quotas, on a worker of the runtime.
        let s = store.clone();
        let pooled = tokio::task::spawn_blocking(move || s.accounts());
        let s = store.clone();
        let worker = tokio::spawn(async move { s.accounts() });
        (pooled.await.unwrap(), worker.await.unwrap())
    });
    assert_eq!(pooled.unwrap()[0].account, "alice");
    assert_eq!(worker.unwrap()[0].account, "alice");
}

#[test]
fn a_database_that_stops_answering_is_an_error_after_the_call_timeout() {
    let Some(nodes) = Nodes::start("silent") else {
        return;
    };
    let limit = Duration::from_secs(2);
    let store = PgAccounts::new(nodes.dbs[0].clone().call_timeout(limit));
    assert!(store.invites().unwrap().is_empty(), "a pooled connection");
    nodes.pg.freeze();
    let asked = std::time::Instant::now();
    let e = store.invites().unwrap_err();
    let took = asked.elapsed();
    nodes.pg.thaw();
    named(&e);
    assert!(format!("{e:#}").contains("no answer within 2s"), "{e:#}");
    assert!(took >= limit && took < limit * 5, "{took:?}");
    let back = poll_until(Duration::from_secs(30), || {
        store.invites().map_err(|e| format!("{e:#}"))
    });
    assert_eq!(back.unwrap(), Vec::new());
}

/// Checks that an error names the database and its config key.
fn named(e: impl std::fmt::Display) {
    let said = format!("{e:#}");
    assert!(
        said.contains("PostgreSQL at 127.0.0.1:") && said.contains("server.cluster.postgres"),
        "{said}"
    );
}
