//! Loading, checking and reloading peer TLS material, and the handshake both ways over
//! loopback.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn at(offset_days: i64) -> Result<time::OffsetDateTime, Box<dyn std::error::Error>> {
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    Ok(time::OffsetDateTime::from_unix_timestamp(
        now + offset_days * 86_400,
    )?)
}

/// A CA for tests: its PEM and an issuer.
struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Result<TestCa, Box<dyn std::error::Error>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate()?;
    let pem = params.self_signed(&key)?.pem();
    Ok(TestCa {
        pem,
        issuer: Issuer::new(params, key),
    })
}

/// A certificate for `names` from `ca`, valid from `from_days` to `until_days` (relative to
/// now): its PEM and its key's PEM.
fn leaf(
    ca: &TestCa,
    names: &[String],
    from_days: i64,
    until_days: i64,
) -> Result<(String, String), Box<dyn std::error::Error>> {
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(DnType::CommonName, "test");
    params.not_before = at(from_days)?;
    params.not_after = at(until_days)?;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write(
    dir: &Path,
    name: &str,
    ca: &str,
    cert: &str,
    key: &str,
) -> Result<TlsPaths, std::io::Error> {
    let paths = TlsPaths {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&paths.ca, ca)?;
    std::fs::write(&paths.cert, cert)?;
    std::fs::write(&paths.key, key)?;
    Ok(paths)
}

fn node(
    dir: &Path,
    ca: &TestCa,
    id: NodeId,
) -> Result<(TlsPaths, Arc<PeerTls>), Box<dyn std::error::Error>> {
    let (cert, key) = leaf(ca, &[node_name(id)], -1, 30)?;
    let paths = write(dir, &format!("node-{id}"), &ca.pem, &cert, &key)?;
    let tls = PeerTls::load(id, paths.clone())?;
    Ok((paths, tls))
}

/// Why node `id`'s material in `paths` does not load (`None` if it does).
fn load_problem(id: NodeId, paths: TlsPaths) -> Option<String> {
    PeerTls::load(id, paths).err().map(|e| e.to_string())
}

#[test]
fn a_certificate_from_the_ca_naming_the_node_loads() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ca = ca("cluster")?;
    let (_, tls) = node(dir.path(), &ca, 1)?;
    assert_eq!(tls.refused_total(), 0);
    Ok(())
}

#[test]
fn a_certificate_for_another_node_is_refused_at_load() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ca = ca("cluster")?;
    let (cert, key) = leaf(&ca, &[node_name(2)], -1, 30)?;
    let paths = write(dir.path(), "n", &ca.pem, &cert, &key)?;
    let error = load_problem(1, paths);
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("node-1.parley")),
        "{error:?}"
    );
    Ok(())
}

#[test]
fn an_expired_or_foreign_or_mismatched_certificate_is_refused_at_load() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ca_ours = ca("cluster")?;
    let ca_other = ca("other")?;
    let (expired, expired_key) = leaf(&ca_ours, &[node_name(1)], -30, -1)?;
    let paths = write(dir.path(), "expired", &ca_ours.pem, &expired, &expired_key)?;
    assert!(
        PeerTls::load(1, paths).is_err(),
        "an expired certificate loaded"
    );

    let (foreign, foreign_key) = leaf(&ca_other, &[node_name(1)], -1, 30)?;
    let paths = write(dir.path(), "foreign", &ca_ours.pem, &foreign, &foreign_key)?;
    assert!(
        PeerTls::load(1, paths).is_err(),
        "a foreign certificate loaded"
    );

    let (cert, _) = leaf(&ca_ours, &[node_name(1)], -1, 30)?;
    let paths = write(dir.path(), "mismatch", &ca_ours.pem, &cert, &expired_key)?;
    let error = load_problem(1, paths);
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("does not match")),
        "{error:?}"
    );

    let paths = write(dir.path(), "garbage", "not pem", &cert, &expired_key)?;
    assert!(
        PeerTls::load(1, paths).is_err(),
        "a CA file without PEM loaded"
    );
    Ok(())
}

#[test]
fn reload_picks_up_new_files_and_keeps_the_old_material_when_new_ones_are_broken() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ca = ca("cluster")?;
    let (paths, tls) = node(dir.path(), &ca, 1)?;
    assert_eq!(tls.reload()?, Reloaded::Unchanged);
    let before = tls.client_config();

    let (cert, key) = leaf(&ca, &[node_name(1)], -1, 60)?;
    std::fs::write(&paths.cert, &cert)?;
    std::fs::write(&paths.key, &key)?;
    assert_eq!(tls.reload()?, Reloaded::Changed);
    assert!(!Arc::ptr_eq(&before, &tls.client_config()));

    let kept = tls.client_config();
    std::fs::write(&paths.key, "half a key")?;
    assert!(tls.reload().is_err());
    assert!(
        Arc::ptr_eq(&kept, &tls.client_config()),
        "broken files replaced the material"
    );
    Ok(())
}

#[test]
fn a_certificate_names_only_its_node() -> TestResult {
    let ca = ca("cluster")?;
    let (cert, _) = leaf(&ca, &[node_name(7)], -1, 30)?;
    let der = CertificateDer::from_pem_slice(cert.as_bytes())?;
    assert!(certificate_names_node(&der, 7));
    assert!(!certificate_names_node(&der, 70));
    assert!(!certificate_names_node(&der, 1));
    Ok(())
}

/// A client handshake with `client` against `server_addr`, expecting node `expected`; then one
/// byte each way, so a refusal by the server shows on the client.
async fn handshake(
    client: &PeerTls,
    server_addr: std::net::SocketAddr,
    expected: NodeId,
) -> Result<(), Box<dyn std::error::Error>> {
    let tcp = tokio::net::TcpStream::connect(server_addr).await?;
    let mut stream = tokio_rustls::TlsConnector::from(client.client_config())
        .connect(node_server_name(expected)?, tcp)
        .await?;
    stream.write_all(b"x").await?;
    stream.flush().await?;
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut byte)).await??;
    Ok(())
}

#[tokio::test]
async fn the_handshake_checks_both_ends() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ours = ca("cluster")?;
    let other = ca("other")?;
    let (_, server) = node(dir.path(), &ours, 2)?;
    let (_, client) = node(dir.path(), &ours, 1)?;
    let foreign_dir = tempfile::tempdir()?;
    let (_, foreign) = node(foreign_dir.path(), &other, 1)?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut incoming = Box::pin(accept::incoming(listener, server.clone()));
    // The server echoes one byte on each connection it accepts and reports who it was.
    let (identities, mut accepted) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Some(Ok(mut connection)) = incoming.next().await {
            let identity = tonic::transport::server::Connected::connect_info(&connection);
            let _ = identities.send(identity).await;
            let mut byte = [0u8; 1];
            if connection.read_exact(&mut byte).await.is_ok() {
                let _ = connection.write_all(&byte).await;
                let _ = connection.flush().await;
            }
        }
    });

    handshake(&client, addr, 2).await?;
    let identity = accepted.recv().await.ok_or("no connection accepted")?;
    let certificate = identity.certificate.ok_or("no client certificate")?;
    assert!(certificate_names_node(&certificate, 1));

    assert!(
        handshake(&client, addr, 3).await.is_err(),
        "a client expecting node 3 accepted node 2's certificate"
    );
    settle(&server, 1).await;
    assert!(
        handshake(&foreign, addr, 2).await.is_err(),
        "a server accepted a client certificate from another CA"
    );
    settle(&server, 2).await;
    assert_eq!(
        server.refused_total(),
        2,
        "the foreign client was not refused by the server"
    );
    assert!(
        accepted.try_recv().is_err(),
        "a refused connection reached the server"
    );
    Ok(())
}

/// Waits (at most 5 s) for `server` to have refused `count` handshakes.
async fn settle(server: &PeerTls, count: u64) {
    for _ in 0..500 {
        if server.refused_total() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
