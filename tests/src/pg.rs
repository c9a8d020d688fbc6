//! A throwaway PostgreSQL 15 cluster for the cluster-backend tests: `initdb` into a fresh
//! directory, a server on a loopback port, one database per test, stopped and removed
//! when dropped. Debian's `postgresql` package provides the programs
//! (`scripts/test-deps.sh` installs it); as root they run as the `postgres` user, since
//! `initdb` refuses root.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::exec::free_port;
use crate::node::describe;
use crate::wine::REQUIRE_TOOLS_ENV;

/// Where Debian's `postgresql-15` puts the server programs.
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The role every test connects as (trust authentication on loopback only).
pub const ROLE: &str = "filesync";

pub struct Postgres {
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Postgres {
    /// A running server; `None` (the test says it skipped) where PostgreSQL 15 is not
    /// installed, except under `.ci/run` (`FILESYNC_REQUIRE_TOOLS`), where that fails.
    pub fn start_or_skip() -> Option<Postgres> {
        if !Path::new(PG_BIN).join("initdb").is_file() {
            assert!(
                std::env::var_os(REQUIRE_TOOLS_ENV).is_none(),
                "PostgreSQL 15 is not installed, and {REQUIRE_TOOLS_ENV} says the cluster \
                 tests must run: scripts/test-deps.sh installs it (apt-get install postgresql)"
            );
            eprintln!("skipped: PostgreSQL 15 is not installed (apt-get install postgresql)");
            return None;
        }
        Some(Postgres::start())
    }

    fn start() -> Postgres {
        static N: AtomicU32 = AtomicU32::new(0);
        // Outside the test's own directory: the `postgres` user must reach it, and the
        // socket path must stay short.
        let dir = std::env::temp_dir().join(format!(
            "fspg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).expect("cannot make the PostgreSQL directory");
        let as_postgres = unsafe { libc::geteuid() } == 0;
        if as_postgres {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))
                .expect("cannot open the PostgreSQL directory to its user");
        }
        let pg = Postgres {
            data: dir.join("data"),
            dir,
            port: free_port(),
            as_postgres,
        };
        let data = pg.data.to_str().expect("a UTF-8 temp dir").to_owned();
        pg.run_ok(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                ROLE,
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
        );
        pg.pg_ctl(&["start"]);
        pg
    }

    /// `postgresql://filesync@127.0.0.1:PORT/db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://{ROLE}@127.0.0.1:{}/{db}", self.port)
    }

    /// Makes database `db` and returns its URL.
    pub fn create_db(&self, db: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {db}"));
        self.url(db)
    }

    /// Runs `sql` in `db` with psql; its output, unaligned and without headers.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(db),
            ])
            .args(["-c", sql])
            .output()
            .expect("cannot run psql");
        assert!(out.status.success(), "psql {sql:?}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stops the server as a crash would (`-m immediate`, WAL replay at the next start)
    /// and starts it again.
    pub fn restart_immediate(&self) {
        self.pg_ctl(&["-m", "immediate", "restart"]);
    }

    /// Stops the server (for an outage); [`Postgres::start_again`] brings it back.
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "immediate", "stop"]);
    }

    pub fn start_again(&self) {
        self.pg_ctl(&["start"]);
    }

    /// Stops the server and every one of its processes where they stand (SIGSTOP): to
    /// a client, a database behind a network that drops every packet.
    /// [`Postgres::thaw`] lets them go on; dropping the fixture does too.
    pub fn freeze(&self) {
        self.signal_all(libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal_all(libc::SIGCONT);
    }

    /// Sends `sig` to the postmaster and its children (the backends, the writers).
    fn signal_all(&self, sig: libc::c_int) {
        let Some(postmaster) = fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|pid| pid.lines().next()?.trim().parse::<i32>().ok())
        else {
            return;
        };
        let mut pids = vec![postmaster];
        for entry in fs::read_dir("/proc").expect("/proc").flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            // `pid (comm) state ppid …`; the name may hold spaces, not `)`.
            let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            if ppid == Some(postmaster) {
                pids.push(pid);
            }
        }
        for pid in pids {
            unsafe { libc::kill(pid, sig) };
        }
    }

    /// Restarts the server with TLS on, its certificate (for `127.0.0.1` and
    /// `localhost`) signed by a CA made here. Returns that CA's certificate as a PEM
    /// file, which no system trusts.
    pub fn enable_tls(&self) -> PathBuf {
        let ca_key = rcgen::KeyPair::generate().expect("a CA key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("the CA certificate");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().expect("a server key");
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let cert = rcgen::CertificateParams::new(names)
            .expect("server params")
            .signed_by(&key, &issuer)
            .expect("the server certificate");
        let (crt, pem_key) = (self.dir.join("server.crt"), self.dir.join("server.key"));
        fs::write(&crt, cert.pem()).unwrap();
        fs::write(&pem_key, key.serialize_pem()).unwrap();
        fs::set_permissions(&pem_key, fs::Permissions::from_mode(0o600)).unwrap();
        if self.as_postgres {
            let owned = Command::new("chown")
                .arg("postgres")
                .args([&crt, &pem_key])
                .status()
                .expect("cannot run chown");
            assert!(owned.success(), "chown of the server's TLS files");
        }
        let conf = self.data.join("postgresql.conf");
        let mut text = fs::read_to_string(&conf).expect("postgresql.conf");
        text.push_str(&format!(
            "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            crt.display(),
            pem_key.display()
        ));
        fs::write(&conf, text).unwrap();
        self.pg_ctl(&["restart"]);
        let ca_file = self.dir.join("ca.pem");
        fs::write(&ca_file, ca_cert.pem()).unwrap();
        ca_file
    }

    fn pg_ctl(&self, action: &[&str]) {
        let data = self.data.to_str().expect("a UTF-8 temp dir");
        let log = self.dir.join("log");
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c full_page_writes=off \
             -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let log = log.to_str().expect("a UTF-8 temp dir");
        let mut args = vec!["-D", data, "-l", log, "-w", "-t", "60", "-o", &options];
        args.extend_from_slice(action);
        self.run_ok("pg_ctl", &args);
    }

    fn run_ok(&self, program: &str, args: &[&str]) -> Output {
        let program = Path::new(PG_BIN).join(program);
        let out = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        }
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        assert!(
            out.status.success(),
            "{} {args:?}: {}\nserver log:\n{}",
            program.display(),
            describe(&out),
            fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
        out
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.thaw();
        let data = self.data.to_str().unwrap_or_default().to_owned();
        let program = Path::new(PG_BIN).join("pg_ctl");
        let mut stop = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let _ = stop
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
