// A stand-in for a Redis server in the documentation's examples, included
// (hidden) by each of them: every write releases the next canned reply.
// Not part of the library.

/// Canned replies, released one entry per write, and what was written.
#[allow(dead_code)]
pub struct FakeServer {
    canned: std::collections::VecDeque<Vec<u8>>,
    out: Vec<u8>,
    requests: Vec<u8>,
    writes: Vec<Vec<u8>>,
}

#[allow(dead_code)]
impl FakeServer {
    /// A server that answers the n-th write with `replies[n]`.
    pub fn replying(replies: &[&[u8]]) -> FakeServer {
        FakeServer {
            canned: replies.iter().map(|r| r.to_vec()).collect(),
            out: Vec::new(),
            requests: Vec::new(),
            writes: Vec::new(),
        }
    }

    /// Everything written, in order.
    pub fn requests(&self) -> &[u8] {
        &self.requests
    }

    /// How many writes there were.
    pub fn writes(&self) -> usize {
        self.writes.len()
    }

    /// Each write's bytes.
    pub fn written(&self) -> &[Vec<u8>] {
        &self.writes
    }
}

impl std::io::Read for FakeServer {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        let n = self.out.len().min(b.len());
        b[..n].copy_from_slice(&self.out[..n]);
        self.out.drain(..n);
        Ok(n)
    }
}

impl std::io::Write for FakeServer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.writes.push(b.to_vec());
        self.requests.extend_from_slice(b);
        if let Some(next) = self.canned.pop_front() {
            self.out.extend_from_slice(&next);
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
