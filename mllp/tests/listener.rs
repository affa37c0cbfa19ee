//! Listener and client tests over loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use mllp::{
    ClientError, ClientTls, FrameContext, Handler, Inbound, ListenerConfig, MllpClient, MllpCodec,
    MllpListener, PeerIdentity, Reply, ServerTls, encode_frame,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(5);

fn config() -> ListenerConfig {
    ListenerConfig::new("test-listener", "127.0.0.1:0".parse().unwrap())
}

async fn start<H: Handler>(
    config: ListenerConfig,
    handler: H,
) -> (SocketAddr, CancellationToken, JoinHandle<()>) {
    let listener = MllpListener::bind(config).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    let task = tokio::spawn(listener.serve(handler, token.clone()));
    (addr, token, task)
}

/// Replies "ACK:<payload>" to frames and names the other outcomes.
async fn echo(_ctx: FrameContext, inbound: Inbound) -> Reply {
    match inbound {
        Inbound::Frame(p) => {
            let mut out = b"ACK:".to_vec();
            out.extend_from_slice(&p);
            Reply::Send(out.into())
        }
        Inbound::Noise { skipped } => Reply::Send(format!("noise:{skipped}").into()),
        Inbound::Truncated { bytes } => Reply::Send(format!("truncated:{bytes}").into()),
        Inbound::TooLarge { .. } => Reply::SendAndClose(Bytes::from_static(b"too-large")),
    }
}

/// Reads until the peer closes; true if it closed (EOF or reset) in time.
async fn closes_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut scratch = [0u8; 256];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut scratch)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn plain_round_trip() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_h = Arc::clone(&seen);
    let handler = move |ctx: FrameContext, inbound: Inbound| {
        let seen = Arc::clone(&seen_h);
        async move {
            seen.lock().await.push(ctx.clone());
            echo(ctx, inbound).await
        }
    };
    let (addr, token, task) = start(config(), handler).await;

    let mut client = MllpClient::connect(addr, T).await.unwrap();
    let reply = client.send(b"MSH|^~\\&|one\rPID|1").await.unwrap();
    assert_eq!(&reply[..], b"ACK:MSH|^~\\&|one\rPID|1");
    let reply = client.send(b"two").await.unwrap();
    assert_eq!(&reply[..], b"ACK:two");

    let seen = seen.lock().await.clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(&*seen[0].listener, "test-listener");
    assert_eq!(seen[0].connection_id, 1);
    assert_eq!((seen[0].sequence, seen[1].sequence), (0, 1));
    assert_eq!(seen[1].connection_id, 1);
    assert!(seen[0].peer_identity.is_none());
    assert_eq!(seen[0].peer_addr.ip(), addr.ip());
    assert!(seen[0].received_at <= seen[1].received_at);

    client.close().await.unwrap();
    token.cancel();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn handler_is_told_about_noise_truncation_and_oversize() {
    let (addr, token, task) = start(config().with_max_payload(16), echo).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut wire = b"junk".to_vec();
    wire.extend_from_slice(&encode_frame(b"ok").unwrap());
    wire.extend_from_slice(b"\x0bcut short");
    wire.extend_from_slice(&encode_frame(b"after").unwrap());
    wire.extend_from_slice(&encode_frame(&[b'x'; 64]).unwrap());
    wire.extend_from_slice(&encode_frame(b"never handled").unwrap());
    stream.write_all(&wire).await.unwrap();

    let replies: Vec<Bytes> = FramedRead::new(stream, MllpCodec::new())
        .map(|item| match item.unwrap() {
            Inbound::Frame(p) => p,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
        .await;
    // TooLarge answered with SendAndClose: the connection ends there.
    assert_eq!(
        replies,
        vec![
            Bytes::from_static(b"noise:4"),
            Bytes::from_static(b"ACK:ok"),
            Bytes::from_static(b"truncated:9"),
            Bytes::from_static(b"ACK:after"),
            Bytes::from_static(b"too-large"),
        ]
    );
    token.cancel();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn back_to_back_frames_are_handled_sequentially_and_replied_in_order() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let (fl, mx, ord) = (
        Arc::clone(&in_flight),
        Arc::clone(&max_in_flight),
        Arc::clone(&order),
    );
    let handler = move |_ctx: FrameContext, inbound: Inbound| {
        let (fl, mx, ord) = (Arc::clone(&fl), Arc::clone(&mx), Arc::clone(&ord));
        async move {
            let now = fl.fetch_add(1, Ordering::SeqCst) + 1;
            mx.fetch_max(now, Ordering::SeqCst);
            let Inbound::Frame(p) = inbound else {
                return Reply::Close;
            };
            // The first frame is slow: a concurrent second call would
            // overtake it.
            if &p[..] == b"first" {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            ord.lock().await.push(p.clone());
            fl.fetch_sub(1, Ordering::SeqCst);
            let mut out = b"R:".to_vec();
            out.extend_from_slice(&p);
            Reply::Send(out.into())
        }
    };
    let (addr, token, task) = start(config(), handler).await;

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut wire = encode_frame(b"first").unwrap().to_vec();
    wire.extend_from_slice(&encode_frame(b"second").unwrap());
    wire.extend_from_slice(&encode_frame(b"third").unwrap());
    stream.write_all(&wire).await.unwrap();

    let mut replies = FramedRead::new(stream, MllpCodec::new());
    let mut got = Vec::new();
    for _ in 0..3 {
        match tokio::time::timeout(T, replies.next()).await.unwrap() {
            Some(Ok(Inbound::Frame(p))) => got.push(p),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, vec![&b"R:first"[..], b"R:second", b"R:third"]);
    assert_eq!(
        *order.lock().await,
        vec![&b"first"[..], b"second", b"third"]
    );
    assert_eq!(max_in_flight.load(Ordering::SeqCst), 1);

    token.cancel();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn idle_connection_is_closed() {
    let cfg = config().with_idle_timeout(Some(Duration::from_millis(300)));
    let (addr, token, task) = start(cfg, echo).await;

    // Activity keeps it open past the timeout...
    let mut client = MllpClient::connect(addr, T).await.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        client.send(b"ping").await.unwrap();
    }
    // ...and silence closes it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(matches!(
        client.send(b"late").await,
        Err(ClientError::Closed | ClientError::Io(_))
    ));

    // A half-sent frame does not count as activity forever either.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"\x0bpartial").await.unwrap();
    let started = Instant::now();
    assert!(closes_within(&mut raw, Duration::from_secs(3)).await);
    assert!(started.elapsed() >= Duration::from_millis(250));

    token.cancel();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_frame_in_hand() {
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let handler = move |_ctx: FrameContext, inbound: Inbound| {
        let started_tx = started_tx.clone();
        async move {
            let _ = started_tx.send(());
            tokio::time::sleep(Duration::from_millis(500)).await;
            match inbound {
                Inbound::Frame(p) => {
                    let mut out = b"done:".to_vec();
                    out.extend_from_slice(&p);
                    Reply::Send(out.into())
                }
                _ => Reply::None,
            }
        }
    };
    let (addr, token, task) = start(config(), handler).await;

    // One connection that is just waiting, one with a slow frame.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut busy = MllpClient::connect(addr, T).await.unwrap();
    busy.send_no_reply(b"slow").await.unwrap();
    tokio::time::timeout(T, started_rx.recv())
        .await
        .unwrap()
        .unwrap();

    token.cancel();
    // The waiting connection closes at once.
    assert!(closes_within(&mut idle, Duration::from_secs(2)).await);
    // The in-flight frame still gets its reply, then the connection ends.
    assert_eq!(&busy.receive().await.unwrap()[..], b"done:slow");
    assert!(matches!(busy.receive().await, Err(ClientError::Closed)));
    tokio::time::timeout(T, task).await.unwrap().unwrap();

    // Nothing listens any more.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn max_connections_refuses_extra_connections() {
    let (addr, token, task) = start(config().with_max_connections(1), echo).await;

    let mut first = MllpClient::connect(addr, T).await.unwrap();
    assert_eq!(&first.send(b"a").await.unwrap()[..], b"ACK:a");

    let mut extra = TcpStream::connect(addr).await.unwrap();
    assert!(closes_within(&mut extra, Duration::from_secs(2)).await);
    // The first connection is unaffected.
    assert_eq!(&first.send(b"b").await.unwrap()[..], b"ACK:b");

    // Once it leaves, a new connection gets its slot.
    first.close().await.unwrap();
    let deadline = Instant::now() + T;
    loop {
        let mut next = MllpClient::connect(addr, T).await.unwrap();
        match next.send(b"c").await {
            Ok(reply) => {
                assert_eq!(&reply[..], b"ACK:c");
                break;
            }
            // The server may not have noticed the close yet.
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("slot never freed: {e}"),
        }
    }

    token.cancel();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn reply_close_ends_the_connection() {
    let handler = |_ctx: FrameContext, _inbound: Inbound| async { Reply::Close };
    let (addr, token, task) = start(config(), handler).await;
    let mut client = MllpClient::connect(addr, T).await.unwrap();
    assert!(matches!(
        client.send(b"bye").await,
        Err(ClientError::Closed | ClientError::Io(_))
    ));
    token.cancel();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}

struct Pki {
    ca_pem: String,
    server_chain_pem: String,
    server_key_pem: String,
    client_chain_pem: String,
    client_key_pem: String,
    client_der: Vec<u8>,
}

/// A CA, a server leaf for 127.0.0.1/localhost and a client leaf, all
/// signed by the CA (webpki refuses a CA certificate as a leaf).
fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Hearth Test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    server_params
        .distinguished_name
        .push(DnType::CommonName, "hearth-test-server");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params =
        CertificateParams::new(vec!["analyzer.lab.example".to_owned()]).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "lab-analyzer-1");
    client_params
        .distinguished_name
        .push(DnType::OrganizationName, "Acme Lab");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

    Pki {
        ca_pem: ca_cert.pem(),
        server_chain_pem: format!("{}{}", server_cert.pem(), ca_cert.pem()),
        server_key_pem: server_key.serialize_pem(),
        client_chain_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
        client_der: client_cert.der().to_vec(),
    }
}

#[tokio::test]
async fn tls_with_required_client_certificate() {
    let pki = pki();
    // Load the server side from files, as a deployment would.
    let dir = std::env::temp_dir().join(format!("mllp-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (chain_path, key_path, ca_path) = (
        dir.join("server.pem"),
        dir.join("server.key"),
        dir.join("ca.pem"),
    );
    std::fs::write(&chain_path, &pki.server_chain_pem).unwrap();
    std::fs::write(&key_path, &pki.server_key_pem).unwrap();
    std::fs::write(&ca_path, &pki.ca_pem).unwrap();
    let server_tls = ServerTls::from_pem_files(&chain_path, &key_path, Some(&ca_path)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let calls = Arc::new(AtomicUsize::new(0));
    let calls_h = Arc::clone(&calls);
    let handler = move |ctx: FrameContext, _inbound: Inbound| {
        calls_h.fetch_add(1, Ordering::SeqCst);
        async move {
            match ctx.peer_identity {
                Some(id) => Reply::Send(
                    format!(
                        "{}|{}|{}",
                        id.subject,
                        id.dns_names.join(","),
                        id.sha256_hex()
                    )
                    .into(),
                ),
                None => Reply::Send(Bytes::from_static(b"anonymous")),
            }
        }
    };
    let (addr, token, task) = start(config().with_tls(server_tls), handler).await;

    // Without a client certificate: refused, handler never called.
    let anonymous = ClientTls::from_pem(pki.ca_pem.as_bytes(), None).unwrap();
    let refused = async {
        let mut client = MllpClient::connect_tls(addr, "localhost", &anonymous, T).await?;
        client.send(b"hello").await
    }
    .await;
    assert!(refused.is_err(), "anonymous client got {refused:?}");

    // With one: the handler sees who it is.
    let with_cert = ClientTls::from_pem(
        pki.ca_pem.as_bytes(),
        Some((
            pki.client_chain_pem.as_bytes(),
            pki.client_key_pem.as_bytes(),
        )),
    )
    .unwrap();
    let mut client = MllpClient::connect_tls(addr, "127.0.0.1", &with_cert, T)
        .await
        .unwrap();
    let reply = client.send(b"hello").await.unwrap();
    let fingerprint: String = Sha256::digest(&pki.client_der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // RFC 4514 writes the RDNs last-first; rcgen encodes CN before O.
    assert_eq!(
        std::str::from_utf8(&reply).unwrap(),
        format!("O=Acme Lab,CN=lab-analyzer-1|analyzer.lab.example|{fingerprint}")
    );
    let parsed = PeerIdentity::from_der(&pki.client_der).unwrap();
    assert_eq!(parsed.sha256_hex(), fingerprint);
    assert_eq!(parsed.certificate.as_ref(), &pki.client_der[..]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    client.close().await.unwrap();

    token.cancel();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn tls_without_client_auth_and_wrong_server_name() {
    let pki = pki();
    let server_tls = ServerTls::from_pem(
        pki.server_chain_pem.as_bytes(),
        pki.server_key_pem.as_bytes(),
        None,
    )
    .unwrap();
    let (addr, token, task) = start(config().with_tls(server_tls), echo).await;
    let tls = ClientTls::from_pem(pki.ca_pem.as_bytes(), None).unwrap();

    let mut client = MllpClient::connect_tls(addr, "localhost", &tls, T)
        .await
        .unwrap();
    assert_eq!(&client.send(b"x").await.unwrap()[..], b"ACK:x");

    // The certificate does not name this host: the client refuses.
    assert!(
        MllpClient::connect_tls(addr, "other.example", &tls, T)
            .await
            .is_err()
    );
    // A plain-TCP client gets no MLLP reply from a TLS listener.
    let mut plain = MllpClient::connect(addr, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(plain.send(b"x").await.is_err());

    token.cancel();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}

#[test]
fn tls_config_errors_are_typed() {
    let pki = pki();
    assert!(matches!(
        ServerTls::from_pem(b"", pki.server_key_pem.as_bytes(), None),
        Err(mllp::TlsError::NoCertificates)
    ));
    assert!(matches!(
        ServerTls::from_pem(pki.server_chain_pem.as_bytes(), b"", None),
        Err(mllp::TlsError::Pem { .. })
    ));
    assert!(matches!(
        ServerTls::from_pem(
            pki.server_chain_pem.as_bytes(),
            pki.server_key_pem.as_bytes(),
            Some(b"not pem")
        ),
        Err(mllp::TlsError::NoCaCertificates)
    ));
    assert!(matches!(
        ServerTls::from_pem_files("/nonexistent/chain.pem", "/nonexistent/key.pem", None),
        Err(mllp::TlsError::ReadFile { .. })
    ));
}

#[tokio::test]
async fn large_frames_cross_many_reads_and_oversize_does_not_end_the_connection() {
    let handler = |_ctx: FrameContext, inbound: Inbound| async move {
        match inbound {
            Inbound::Frame(p) => Reply::Send(format!("len:{}", p.len()).into()),
            Inbound::TooLarge { bytes } => Reply::Send(format!("too-large:{bytes}").into()),
            _ => Reply::None,
        }
    };
    let cap = 1024 * 1024;
    let (addr, token, task) = start(config().with_max_payload(cap), handler).await;
    let mut client = MllpClient::connect(addr, T).await.unwrap();

    let at_cap = vec![b'a'; cap];
    assert_eq!(&client.send(&at_cap).await.unwrap()[..], b"len:1048576");
    let over = vec![b'b'; 3 * cap];
    assert_eq!(
        &client.send(&over).await.unwrap()[..],
        format!("too-large:{}", cap + 1).as_bytes()
    );
    // The connection carries on after the oversize frame.
    assert_eq!(&client.send(b"small").await.unwrap()[..], b"len:5");

    token.cancel();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}
