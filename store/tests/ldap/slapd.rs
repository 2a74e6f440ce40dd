//! A real OpenLDAP `slapd` for tests: an mdb database in a temp dir loaded with
//! `slapadd` from `users.ldif`, listening on a free 127.0.0.1 port, killed on drop.
//! Shared by the store's LDAP tests and the server-level LDAP test.
// Each including test uses a different part of it.
#![allow(dead_code)]

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tidegate_store::password::{self, Params};
use tidegate_store::users::LdapConfig;

pub const BASE: &str = "dc=example,dc=com";
pub const READER: &str = "cn=reader,dc=example,dc=com";

/// A file of the LDAP fixtures (`store/tests/ldap/`), from the store crate's tests or
/// from the workspace root's.
pub fn fixture(name: &str) -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = [here.join("tests/ldap"), here.join("store/tests/ldap")]
        .into_iter()
        .find(|d| d.join("users.ldif").is_file())
        .expect("the LDAP fixtures");
    dir.join(name)
}

/// The first of `candidates` that exists, else `name` found on `PATH`.
pub fn find_program(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    candidates
        .iter()
        .map(PathBuf::from)
        .chain(from_path)
        .find(|p| p.is_file())
}

/// `N` distinct ports free on 127.0.0.1: each stays bound until all are picked, so the
/// kernel cannot hand out one of them twice.
fn free_ports<const N: usize>() -> [u16; N] {
    let held: [TcpListener; N] = std::array::from_fn(|_| TcpListener::bind("127.0.0.1:0").unwrap());
    held.map(|listener| listener.local_addr().unwrap().port())
}

/// A running slapd with the fixture users, killed on drop.
pub struct Slapd {
    pub dir: tempfile::TempDir,
    slapd: PathBuf,
    pub port: u16,
    pub tls_port: Option<u16>,
    child: Option<Child>,
}

impl Slapd {
    /// Starts slapd, or `None` (after saying so) when it is not installed.
    pub fn start() -> Option<Slapd> {
        Slapd::start_with(None)
    }

    /// With `tls`, also serves `ldaps://` and StartTLS with this `(cert, key)` PEM pair.
    pub fn start_with(tls: Option<(&str, &str)>) -> Option<Slapd> {
        let Some(slapd) = find_program("slapd", &["/usr/sbin/slapd", "/usr/local/libexec/slapd"])
        else {
            eprintln!("skipped: slapd not installed");
            return None;
        };
        let Some(slapadd) = find_program("slapadd", &["/usr/sbin/slapadd"]) else {
            eprintln!("skipped: slapd not installed (no slapadd)");
            return None;
        };
        let schema = ["/etc/ldap/schema", "/etc/openldap/schema"]
            .iter()
            .map(PathBuf::from)
            .find(|d| d.join("core.schema").is_file())
            .expect("slapd is installed but its schema directory was not found");
        let modules = ["/usr/lib/ldap", "/usr/lib64/openldap", "/usr/lib/openldap"]
            .iter()
            .map(PathBuf::from)
            .find(|d| d.join("back_mdb.la").is_file() || d.join("back_mdb.so").is_file());

        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        fs::create_dir(&db).unwrap();
        let mut conf = String::new();
        for name in ["core", "cosine", "inetorgperson", "misc"] {
            conf += &format!(
                "include {}\n",
                schema.join(format!("{name}.schema")).display()
            );
        }
        conf += &format!("include {}\n", fixture("tidegate-test.schema").display());
        conf += &format!("pidfile {}\n", dir.path().join("slapd.pid").display());
        if let Some(modules) = &modules {
            conf += &format!("modulepath {}\nmoduleload back_mdb\n", modules.display());
        }
        if let Some((cert, key)) = tls {
            let cert_path = dir.path().join("cert.pem");
            let key_path = dir.path().join("key.pem");
            fs::write(&cert_path, cert).unwrap();
            fs::write(&key_path, key).unwrap();
            conf += &format!(
                "TLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                cert_path.display(),
                key_path.display()
            );
        }
        conf += &format!(
            "database mdb\nsuffix \"{BASE}\"\nrootdn \"cn=admin,{BASE}\"\n\
             directory {}\nmaxsize 10485760\n\
             access to attrs=userPassword by dn.exact=\"{READER}\" read by anonymous auth by * none\n\
             access to * by * read\n",
            db.display()
        );
        let conf_path = dir.path().join("slapd.conf");
        fs::write(&conf_path, conf).unwrap();

        let diane = password::hash_argon2id_with(Params::new(8, 1, 1, None).unwrap(), b"dianepw");
        let diane = diane.strip_prefix("{ARGON2ID}").unwrap();
        let ldif = fs::read_to_string(fixture("users.ldif"))
            .unwrap()
            .replace("@DIANE_HASH@", diane);
        let ldif_path = dir.path().join("users.ldif");
        fs::write(&ldif_path, ldif).unwrap();
        let loaded = Command::new(&slapadd)
            .arg("-q")
            .arg("-f")
            .arg(&conf_path)
            .arg("-l")
            .arg(&ldif_path)
            .output()
            .unwrap();
        assert!(
            loaded.status.success(),
            "slapadd failed: {}",
            String::from_utf8_lossy(&loaded.stderr)
        );
        let [port, tls_port] = free_ports();
        let mut server = Slapd {
            dir,
            slapd,
            port,
            tls_port: tls.map(|_| tls_port),
            child: None,
        };
        server.run();
        Some(server)
    }

    pub fn run(&mut self) {
        let mut urls = format!("ldap://127.0.0.1:{}/", self.port);
        if let Some(tls_port) = self.tls_port {
            urls += &format!(" ldaps://127.0.0.1:{tls_port}/");
        }
        let log = fs::File::create(self.dir.path().join("slapd.log")).unwrap();
        let child = Command::new(&self.slapd)
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(urls)
            .arg("-d")
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "slapd exited with {status}: {}",
                    fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "slapd did not start listening");
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// Compare-mode settings as the docs' example: reader account, tohost and fields.
    pub fn config(&self) -> LdapConfig {
        let mut config = LdapConfig::new(self.url(), BASE);
        config.bind_dn = READER.into();
        config.bind_password = "readerpw".into();
        config.tohost_attribute = Some("mailHost".into());
        config.fields = vec![
            ("quota".into(), "tidegateQuota".into()),
            ("nologin".into(), "tidegateNologin".into()),
        ];
        config.timeout = Duration::from_secs(5);
        config
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
