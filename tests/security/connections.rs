//! Finding 3: no timeouts on connections. Idle sockets, partial headers and partial bodies
//! stayed open for minutes, and 250 idle connections under a 200-file limit kept `/healthz`
//! out for as long as they were held.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use huitong::app::App;
use huitong_tests::org::{hub_listener, load_config, temp_dir, until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Long enough for any timeout configured here to fire many times over.
const BOUND: Duration = Duration::from_secs(20);

struct Hub {
    base: String,
    addr: std::net::SocketAddr,
    _stop: watch::Sender<bool>,
    dir: PathBuf,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The real composition (`App`) on SQLite, with these `[server]` settings.
async fn hub(server: &str) -> Hub {
    let dir = temp_dir("huitong-security");
    let file = dir.join("huitong.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nbody_limit_bytes = 65536\n{server}\n[database]\nurl = \"sqlite://{}/huitong.db\"\n[schedules]\ndir = \"{}/none\"\n",
            dir.display(),
            dir.display()
        ),
    )
    .unwrap();
    let config = load_config(file, &[]);
    let app = App::start(config).await.unwrap();
    let (listener, base) = hub_listener().await;
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    tokio::spawn(async move {
        let _ = app.serve(listener, until(rx)).await;
    });
    Hub {
        base,
        addr,
        _stop: stop,
        dir,
    }
}

/// Everything the server sends until it closes the connection; panics if it is still open
/// after `BOUND`.
async fn until_closed(stream: &mut TcpStream, what: &str) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        read.is_ok(),
        "{what}: the connection is still open after {BOUND:?}; received {text:?}"
    );
    text
}

async fn healthz(base: &str) -> reqwest::StatusCode {
    let client = reqwest::Client::builder().timeout(BOUND).build().unwrap();
    match client.get(format!("{base}/healthz")).send().await {
        Ok(r) => r.status(),
        Err(e) => panic!("/healthz did not answer: {e}"),
    }
}

#[tokio::test]
async fn an_idle_connection_is_closed() {
    let hub = hub("idle_timeout_ms = 1000\nheader_timeout_ms = 60000").await;
    let mut s = TcpStream::connect(hub.addr).await.unwrap();
    let got = until_closed(&mut s, "a connection that sends nothing").await;
    assert_eq!(got, "", "nothing was asked, nothing is answered");

    // After a request too: the kept-alive connection does not stay open for ever.
    let mut s = TcpStream::connect(hub.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let got = until_closed(&mut s, "a kept-alive connection after one request").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(healthz(&hub.base).await, 200);
}

#[tokio::test]
async fn headers_sent_slowly_are_cut_off() {
    // Idle never applies here: a byte arrives every 200 ms.
    let hub = hub("header_timeout_ms = 1000\nidle_timeout_ms = 60000").await;
    let s = TcpStream::connect(hub.addr).await.unwrap();
    let (mut read, mut write) = s.into_split();
    let trickle = tokio::spawn(async move {
        if write
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .is_err()
        {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if write.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let read_all = tokio::time::timeout(BOUND, read.read_to_end(&mut got)).await;
    trickle.abort();
    let text = String::from_utf8_lossy(&got);
    assert!(
        read_all.is_ok(),
        "headers trickled byte by byte kept the connection open for {BOUND:?}"
    );
    assert!(
        !text.contains(" 200 "),
        "unfinished headers were answered: {text}"
    );
    assert_eq!(healthz(&hub.base).await, 200);
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_is_answered_408_and_closed() {
    let hub =
        hub("body_timeout_ms = 1000\nrequest_timeout_ms = 60000\nidle_timeout_ms = 60000").await;
    // Within the body limit (64 KiB): the server waits for it, but not for ever.
    let mut s = TcpStream::connect(hub.addr).await.unwrap();
    s.write_all(
        b"POST /callbacks/feishu/anyone HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 60000\r\n\r\n",
    )
    .await
    .unwrap();
    s.write_all(&[b' '; 1024]).await.unwrap();
    let got = until_closed(&mut s, "a body 59 KB short").await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert_eq!(healthz(&hub.base).await, 200);
}

#[tokio::test]
async fn a_huge_content_length_is_refused_without_reading_the_body() {
    let hub =
        hub("body_timeout_ms = 60000\nrequest_timeout_ms = 60000\nidle_timeout_ms = 60000").await;
    let mut s = TcpStream::connect(hub.addr).await.unwrap();
    s.write_all(
        b"POST /callbacks/feishu/anyone HTTP/1.1\r\nhost: x\r\ncontent-length: 10000000000\r\n\r\n",
    )
    .await
    .unwrap();
    s.write_all(&[b'x'; 1024]).await.unwrap();
    let got = until_closed(&mut s, "10 GB announced, 1 KB sent").await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
}

/// Open `n` connections that send nothing, one after the other.
async fn hold_idle(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(TcpStream::connect(addr).await.unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    held
}

#[tokio::test]
async fn idle_connections_over_the_cap_do_not_keep_healthz_out() {
    // Nothing expires by time here: only the cap can make room.
    let hub =
        hub("max_connections = 10\nidle_timeout_ms = 600000\nheader_timeout_ms = 600000").await;
    let mut held = hold_idle(hub.addr, 30).await;
    for _ in 0..5 {
        assert_eq!(healthz(&hub.base).await, 200);
    }
    // Room was made by closing the connections idle the longest.
    let got = until_closed(
        &mut held[0],
        "the oldest idle connection, 30 over a cap of 10",
    )
    .await;
    assert_eq!(got, "");
    let text = reqwest::get(format!("{}/metrics", hub.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let open: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("huitong_http_connections_open "))
        .unwrap_or_else(|| panic!("no huitong_http_connections_open in {text}"))
        .trim()
        .parse()
        .unwrap();
    assert!(open <= 10.0, "{open} connections open over a cap of 10");
}

/// The finding as reported: `huitong serve` under `ulimit -n 200`, 250 idle connections held,
/// and `/healthz` must still answer (before, accept() failed with EMFILE and `/healthz` waited
/// in the backlog for as long as the connections were held).
#[tokio::test]
async fn idle_connections_over_the_open_file_limit_do_not_keep_healthz_out() {
    let test = "idle_connections_over_the_open_file_limit_do_not_keep_healthz_out";
    let Some(bin) = crate::huitong_bin(test) else {
        return;
    };
    let dir = temp_dir("huitong-security-serve");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 200 && exec \"$0\" serve --listen \"$1\"")
        .arg(&bin)
        .arg(addr.to_string())
        .current_dir(&dir)
        .env(
            "HUITONG_DATABASE_URL",
            format!("sqlite://{}/huitong.db", dir.display()),
        )
        .env("HUITONG_SCHEDULES_DIR", dir.join("none"))
        .env("HUITONG_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://{addr}");
    let mut up = false;
    for _ in 0..300 {
        if reqwest::get(format!("{base}/healthz")).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "huitong serve did not come up on {base}");
    let held = hold_idle(addr, 250).await;
    for _ in 0..5 {
        assert_eq!(healthz(&base).await, 200);
    }
    drop(held);
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(dir);
}
