use std::time::Duration;

use futures::StreamExt;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::*;

const CHUNKED: &[u8] =
    b"4\r\nWiki\r\n5;name=value\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";

fn chunked() -> Framing {
    Framing::Chunked(Chunk::Size)
}

/// Feeds `input` in pieces cut at `cuts` and returns the decoded body, whether it ended, and
/// what was left after its end.
fn feed(mut framing: Framing, input: &[u8], cuts: &[usize]) -> (Vec<u8>, bool, Vec<u8>) {
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    let mut done = false;
    let mut from = 0;
    for &to in cuts.iter().chain([input.len()].iter()) {
        buf.extend_from_slice(&input[from..to]);
        from = to;
        if framing.decode(&mut buf, &mut out).unwrap() == Decoded::Done {
            done = true;
            break;
        }
    }
    buf.extend_from_slice(&input[from..]);
    (out.to_vec(), done, buf.to_vec())
}

#[test]
fn chunked_body_decodes_however_the_reads_cut_it() {
    let (whole, done, rest) = feed(chunked(), CHUNKED, &[]);
    assert_eq!((whole.as_slice(), done, rest.as_slice()), (&b"Wikipedia in\r\n\r\nchunks."[..], true, &b"NEXT"[..]));
    for cut in 1..CHUNKED.len() {
        assert_eq!(feed(chunked(), CHUNKED, &[cut]), (whole.clone(), true, b"NEXT".to_vec()), "cut at {cut}");
    }
    let every_byte: Vec<usize> = (1..CHUNKED.len()).collect();
    assert_eq!(feed(chunked(), CHUNKED, &every_byte), (whole, true, b"NEXT".to_vec()));
}

#[test]
fn length_body_stops_at_its_length() {
    assert_eq!(feed(Framing::Length(5), b"helloEXTRA", &[2]), (b"hello".to_vec(), true, b"EXTRA".to_vec()));
    assert_eq!(feed(Framing::Length(10), b"short", &[]), (b"short".to_vec(), false, vec![]));
}

#[test]
fn malformed_chunks_are_errors() {
    for bad in [&b"zz\r\nab\r\n"[..], b"2\r\nabc\r\n", b"-1\r\n", b"\r\n", b"10000000000000000\r\n"] {
        let (mut buf, mut out) = (BytesMut::from(bad), BytesMut::new());
        assert!(chunked().decode(&mut buf, &mut out).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
    let mut long = BytesMut::from(&[b'1'; MAX_LINE + 1][..]);
    assert!(chunked().decode(&mut long, &mut BytesMut::new()).is_err(), "an endless size line");
}

#[test]
fn framing_follows_the_head() {
    let h = |pairs: &[(&'static str, &'static str)]| {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    };
    let ok = StatusCode::OK;
    assert_eq!(Framing::for_answer("POST", ok, &h(&[("transfer-encoding", "gzip, chunked")])), Ok(chunked()));
    assert_eq!(Framing::for_answer("POST", ok, &h(&[("transfer-encoding", "chunked, gzip")])), Ok(Framing::Close));
    assert_eq!(Framing::for_answer("POST", ok, &h(&[("content-length", "12")])), Ok(Framing::Length(12)));
    assert_eq!(Framing::for_answer("POST", ok, &h(&[("content-length", "0")])), Ok(Framing::Done));
    assert!(Framing::for_answer("POST", ok, &h(&[("content-length", "-3")])).is_err());
    assert_eq!(Framing::for_answer("POST", ok, &h(&[])), Ok(Framing::Close));
    assert_eq!(Framing::for_answer("POST", StatusCode::NO_CONTENT, &h(&[("content-length", "9")])), Ok(Framing::Done));
    assert_eq!(Framing::for_answer("HEAD", ok, &h(&[("content-length", "9")])), Ok(Framing::Done));
}

#[test]
fn request_carries_its_own_framing() {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("content-length", HeaderValue::from_static("999"));
    h.insert("connection", HeaderValue::from_static("close"));
    let req = encode_request("POST", "b1:8080", "/v1/chat/completions", &h, b"{}");
    assert_eq!(
        String::from_utf8(req).unwrap(),
        "POST /v1/chat/completions HTTP/1.1\r\nhost: b1:8080\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"
    );
}

#[test]
fn endpoints() {
    assert_eq!(split_endpoint("http://10.0.0.5:8080").unwrap(), ("10.0.0.5:8080", ""));
    assert_eq!(split_endpoint("http://[::1]:8080/base/").unwrap(), ("[::1]:8080", "/base"));
    assert_eq!(with_port("board-1"), "board-1:80");
    assert_eq!(with_port("[::1]"), "[::1]:80");
    assert_eq!(with_port("[::1]:81"), "[::1]:81");
    assert!(split_endpoint("https://b1:8443").unwrap_err().detail.contains("plain http://"));
    assert!(split_endpoint("http:///x").is_err());
}

/// Reads one request (head and `content-length` body) from `conn`; `None` at EOF.
async fn read_request(conn: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length: ")).map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0; len];
    conn.read_exact(&mut body).await.ok()?;
    Some(head + &String::from_utf8(body).unwrap())
}

/// A board that answers each request on a connection with a streamed, chunked answer sent in
/// three writes; `close_after` requests per connection. Reports each accepted connection.
async fn board(close_after: usize) -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (accepted, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let _ = accepted.send(());
            tokio::spawn(async move {
                for _ in 0..close_after {
                    let Some(req) = read_request(&mut conn).await else { return };
                    assert!(req.contains("x-request-id: r1\r\n"), "{req}");
                    let head =
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                    conn.write_all(head.as_bytes()).await.unwrap();
                    conn.write_all(b"8\r\ndata: a\n\r\n8\r\ndata: b\n\r\n").await.unwrap();
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    conn.write_all(b"8\r\ndata: c\n\r\n0\r\n\r\n").await.unwrap();
                }
            });
        }
    });
    (endpoint, rx)
}

async fn ask(endpoint: &str) -> (StatusCode, Vec<Bytes>, bool) {
    let mut h = HeaderMap::new();
    h.insert("x-request-id", HeaderValue::from_static("r1"));
    let a =
        send(endpoint, "POST", "/v1/chat/completions", &h, b"{\"model\":\"m\"}", Duration::from_secs(2)).await.unwrap();
    assert_eq!(a.headers["content-type"], "text/event-stream");
    let pieces = a.body.map(Result::unwrap).collect().await;
    (a.status, pieces, a.opened)
}

#[tokio::test(flavor = "current_thread")]
async fn a_streamed_answer_leaves_as_it_was_read_and_the_connection_is_kept() {
    enable_pool();
    let (endpoint, mut accepted) = board(usize::MAX).await;
    for i in 0..3 {
        let (status, pieces, opened) = ask(&endpoint).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(opened, i == 0, "request {i}");
        // What one read brought leaves together: the two events the board wrote at once are one
        // piece (the last may join them if this side was slow to read).
        assert!(pieces[0].starts_with(b"data: a\ndata: b\n"), "{pieces:?}");
        assert_eq!(pieces.concat(), b"data: a\ndata: b\ndata: c\n");
    }
    accepted.recv().await.unwrap();
    assert!(accepted.try_recv().is_err(), "three requests on one kept connection");
}

#[tokio::test(flavor = "current_thread")]
async fn a_kept_connection_the_board_closed_is_replaced() {
    enable_pool();
    let (endpoint, mut accepted) = board(1).await;
    for _ in 0..3 {
        let (_, pieces, opened) = ask(&endpoint).await;
        assert_eq!(pieces.concat(), b"data: a\ndata: b\ndata: c\n");
        assert!(opened, "the kept one was closed: a new connection each time");
        // Let the board's close arrive before the connection is taken again.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        accepted.recv().await.unwrap();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_the_body_closes_the_connection() {
    enable_pool();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let board = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        read_request(&mut conn).await.unwrap();
        conn.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n").await.unwrap();
        // The gateway's side goes away: the board sees the end of its connection.
        let mut rest = [0u8; 16];
        tokio::time::timeout(Duration::from_secs(5), conn.read(&mut rest)).await.expect("closed").unwrap()
    });
    let a = send(&endpoint, "POST", "/x", &HeaderMap::new(), b"", Duration::from_secs(2)).await.unwrap();
    let mut body = a.body;
    assert_eq!(body.next().await.unwrap().unwrap(), Bytes::from_static(b"abc"));
    drop(body);
    assert_eq!(board.await.unwrap(), 0, "EOF at the board");
}

#[tokio::test(flavor = "current_thread")]
async fn failures_say_what_failed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let e = send(&endpoint, "POST", "/x", &HeaderMap::new(), b"", Duration::from_secs(2)).await.err().unwrap();
    assert_eq!(e.cause, "connect", "{e:?}");

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        for answer in [&b"NOT HTTP\r\n\r\n"[..], b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"] {
            let (mut conn, _) = listener.accept().await.unwrap();
            read_request(&mut conn).await.unwrap();
            conn.write_all(answer).await.unwrap();
        }
    });
    let e = send(&endpoint, "POST", "/x", &HeaderMap::new(), b"", Duration::from_secs(2)).await.err().unwrap();
    assert_eq!(e.cause, "send");
    assert!(e.detail.contains("malformed"), "{e:?}");
    let a = send(&endpoint, "POST", "/x", &HeaderMap::new(), b"", Duration::from_secs(2)).await.unwrap();
    let err = a.body.collect(1024).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "a body cut short is an error, not an answer");
}
