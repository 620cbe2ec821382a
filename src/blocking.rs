//! Blocking commands (BLPOP, BRPOP, BLMOVE, BZPOPMIN, XREAD BLOCK, WAIT...):
//! a reply deadline derived from the block time, so a block longer than the
//! connection's read timeout is not mistaken for a dead server.

use std::io::{Read, Write};
use std::time::Duration;

use crate::cmd::ToCommand;
use crate::connection::Connection;
use crate::convert::FromValue;
use crate::error::Result;

/// Added to the block time (on top of the read timeout) to cover the
/// server's timer granularity: Redis checks blocked clients' timeouts a few
/// times a second, so its "nothing came" reply can be late by that much.
const BLOCK_MARGIN: Duration = Duration::from_secs(1);

impl<S: Read + Write> Connection<S> {
    /// The reply deadline [`blocking_query`](Connection::blocking_query)
    /// uses for a command that blocks for `block`:
    ///
    /// * `None` (wait for ever) when `block` is zero, which means "block for
    ///   ever" to Redis, or when the connection has no read timeout;
    /// * otherwise `block` + the read timeout + 1 second. The read timeout
    ///   covers the round trip, as for any reply; the second covers the
    ///   server's lateness in noticing that a block expired.
    ///
    /// Useful with [`query_with_timeout`](Connection::query_with_timeout)
    /// or to size a pipeline's wait.
    ///
    /// ```
    /// use std::time::Duration;
    /// use respline::Connection;
    ///
    /// let mut conn = Connection::new(std::io::Cursor::new(Vec::new()));
    /// conn.set_read_timeout(Some(Duration::from_millis(500)));
    /// assert_eq!(conn.blocking_timeout(Duration::from_secs(10)), Some(Duration::from_millis(11_500)));
    /// assert_eq!(conn.blocking_timeout(Duration::ZERO), None);
    /// ```
    pub fn blocking_timeout(&self, block: Duration) -> Option<Duration> {
        if block.is_zero() {
            return None;
        }
        // An overflow is as good as for ever.
        block
            .checked_add(self.read_timeout()?)
            .and_then(|d| d.checked_add(BLOCK_MARGIN))
    }

    /// Sends a command that blocks on the server for up to `block` and
    /// converts its reply, waiting for it as long as
    /// [`blocking_timeout`](Connection::blocking_timeout) says rather than
    /// the read timeout.
    ///
    /// `block` must be the block time written in the command itself (in
    /// seconds for BLPOP, BRPOP, BLMOVE, BZPOPMIN; in milliseconds for
    /// XREAD/XREADGROUP BLOCK and WAIT); zero blocks for ever. An expired
    /// block is a nil reply (`None` for an `Option<T>`), not an error, and
    /// the connection stays usable. If the deadline passes anyway, the
    /// connection is broken, as for any timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// use respline::{cmd, Connection};
    /// # use std::collections::VecDeque;
    /// # use std::io::{Read, Write};
    /// # // A fake server: each request written releases the next canned reply.
    /// # struct Fake { canned: VecDeque<&'static [u8]>, out: Vec<u8>, requests: Vec<u8> }
    /// # impl Read for Fake {
    /// #     fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
    /// #         let n = self.out.len().min(b.len());
    /// #         b[..n].copy_from_slice(&self.out[..n]);
    /// #         self.out.drain(..n);
    /// #         Ok(n)
    /// #     }
    /// # }
    /// # impl Write for Fake {
    /// #     fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
    /// #         self.requests.extend_from_slice(b);
    /// #         self.out.extend_from_slice(self.canned.pop_front().unwrap_or(b""));
    /// #         Ok(b.len())
    /// #     }
    /// #     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
    /// # }
    /// # let canned = VecDeque::from(vec![&b"*2\r\n$4\r\njobs\r\n$3\r\njob\r\n"[..], b"*-1\r\n"]);
    /// # let mut conn = Connection::new(Fake { canned, out: Vec::new(), requests: Vec::new() });
    /// conn.set_read_timeout(Some(Duration::from_secs(1)));
    /// let block = Duration::from_secs(30);
    /// // BLPOP's timeout is in seconds (decimals allowed).
    /// let popped: Option<(String, String)> =
    ///     conn.blocking_query(cmd("BLPOP").arg("jobs").arg(block.as_secs_f64()), block)?;
    /// assert_eq!(popped, Some(("jobs".to_string(), "job".to_string())));
    /// // An expired block is None.
    /// let popped: Option<(String, String)> =
    ///     conn.blocking_query(cmd("BLPOP").arg("jobs").arg(block.as_secs_f64()), block)?;
    /// assert_eq!(popped, None);
    /// # Ok::<(), respline::Error>(())
    /// ```
    pub fn blocking_query<T: FromValue>(
        &mut self,
        command: impl ToCommand,
        block: Duration,
    ) -> Result<T> {
        let timeout = self.blocking_timeout(block);
        self.query_with_timeout(command, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn deadline_from_block_time() {
        let mut conn = Connection::new(Cursor::new(Vec::new()));
        // No read timeout: blocking commands wait for ever too.
        assert_eq!(conn.blocking_timeout(Duration::from_secs(5)), None);
        conn.set_read_timeout(Some(Duration::from_millis(200)));
        assert_eq!(
            conn.blocking_timeout(Duration::from_millis(1500)),
            Some(Duration::from_millis(2700))
        );
        assert_eq!(conn.blocking_timeout(Duration::ZERO), None);
        assert_eq!(conn.blocking_timeout(Duration::MAX), None);
    }
}
