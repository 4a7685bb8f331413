//! A real HTTP/1.1 server on loopback for the scraper's tests: it answers every request
//! with one fixed response, so tests exercise sockets and reqwest rather than a fake.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

/// What the server answers; tests may swap it between scrapes.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// Without a Content-Length the body runs until the connection closes.
    pub content_length: bool,
}

impl Response {
    pub fn ok(body: impl Into<Vec<u8>>) -> Response {
        Response {
            status: 200,
            body: body.into(),
            content_length: true,
        }
    }
}

pub struct TestServer {
    pub url: String,
    response: Arc<Mutex<Response>>,
}

impl TestServer {
    pub async fn start(response: Response) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let url = format!("http://{}/metrics", listener.local_addr().expect("local address"));
        let response = Arc::new(Mutex::new(response));
        let shared = response.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let response = shared.lock().await.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => request.extend_from_slice(&buffer[..read]),
                        }
                    }
                    let mut head = format!(
                        "HTTP/1.1 {} X\r\nContent-Type: text/plain\r\nConnection: close\r\n",
                        response.status
                    );
                    if response.content_length {
                        head.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
                    }
                    head.push_str("\r\n");
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&response.body).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        TestServer { url, response }
    }

    pub async fn set(&self, response: Response) {
        *self.response.lock().await = response;
    }
}

/// A loopback URL nothing listens on.
pub async fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    drop(listener);
    format!("http://{address}/metrics")
}
