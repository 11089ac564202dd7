//! A small fault-injecting HTTP proxy in front of moto on an ephemeral 127.0.0.1 port: it answers the first N
//! requests with AWS throttling (400 ThrottlingException, then 503), and can hold the answer to a chosen action
//! after moto has carried it out, until released (so the runner is killed right after a create call, before it
//! learns what was created). One request per connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Longest a held request waits for release: bounded, so a test that forgets cannot hang.
const HOLD_LIMIT: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Faults {
    /// Requests still to answer with a throttling error; u32::MAX: all of them.
    pub throttle: AtomicU32,
    /// Requests answered with a fault so far.
    pub throttled: AtomicU32,
    /// Hold the answer to the request whose body names this action (`CopyImage`), once moto has answered.
    pub hold_answer_of: std::sync::Mutex<Option<String>>,
    /// Set once moto has carried out that action and its answer is being held.
    pub holding: AtomicBool,
    pub released: AtomicBool,
}

pub struct Proxy {
    pub port: u16,
    pub faults: Arc<Faults>,
}

impl Proxy {
    /// Starts the proxy in front of `upstream_port`; it runs until the test process ends.
    pub fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Faults::default());
        let shared = faults.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let faults = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, upstream_port, &faults);
                });
            }
        });
        Proxy { port, faults }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn serve(mut client: TcpStream, upstream_port: u16, faults: &Faults) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
        let lower = line.to_ascii_lowercase();
        let end = line == "\r\n";
        // One request per connection: the upstream closes after answering.
        if !lower.starts_with("connection:") && !end {
            head.extend_from_slice(line.as_bytes());
        }
        if end {
            break;
        }
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let request_text = format!(
        "{}{}",
        String::from_utf8_lossy(&head),
        String::from_utf8_lossy(&body)
    );

    let left = faults.throttle.load(Ordering::SeqCst);
    if left > 0 {
        if left != u32::MAX {
            faults.throttle.fetch_sub(1, Ordering::SeqCst);
        }
        let n = faults.throttled.fetch_add(1, Ordering::SeqCst);
        let answer = if n.is_multiple_of(2) {
            let body = "<ErrorResponse><Error><Type>Sender</Type><Code>ThrottlingException</Code>\
                        <Message>Rate exceeded</Message></Error></ErrorResponse>";
            format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        } else {
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                .to_string()
        };
        client.write_all(answer.as_bytes())?;
        return Ok(());
    }

    let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port))?;
    upstream.write_all(&head)?;
    upstream.write_all(&body)?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer)?;
    let hold = faults.hold_answer_of.lock().unwrap().clone();
    if let Some(action) = hold
        && request_text.contains(&format!("Action={action}&"))
    {
        faults.holding.store(true, Ordering::SeqCst);
        let started = Instant::now();
        while !faults.released.load(Ordering::SeqCst) && started.elapsed() < HOLD_LIMIT {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    client.write_all(&answer)?;
    Ok(())
}
