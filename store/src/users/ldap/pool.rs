//! A small pool of idle LDAP connections, and the "reuse, else reconnect once" rule.

use std::sync::{Mutex, MutexGuard};

use super::conn::{Connection, LdapError};

/// Idle connections of one kind (service-bound search connections, or connections for
/// user binds), at most `capacity` kept; more may be open while busy.
#[derive(Debug)]
pub(crate) struct Pool {
    idle: Mutex<Vec<Connection>>,
    capacity: usize,
}

impl Pool {
    /// An empty pool keeping at most `capacity` idle connections.
    pub(crate) fn new(capacity: usize) -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
            capacity,
        }
    }

    /// Runs `op` on an idle connection; if that connection turns out to be dead (the
    /// server restarted or an idle timeout closed it), once more on a fresh one from
    /// `open`. A connection that is still healthy afterwards goes back to the pool.
    pub(crate) fn run<T>(
        &self,
        open: impl Fn() -> Result<Connection, LdapError>,
        op: impl Fn(&mut Connection) -> Result<T, LdapError>,
    ) -> Result<T, LdapError> {
        let pooled = self.lock().pop();
        if let Some(mut connection) = pooled {
            match op(&mut connection) {
                Err(error) if error.is_connection_lost() => {
                    log::debug!("pooled LDAP connection lost ({error}); reconnecting");
                }
                result => {
                    self.give_back(connection);
                    return result;
                }
            }
        }
        let mut connection = open()?;
        let result = op(&mut connection);
        self.give_back(connection);
        result
    }

    /// Closes every idle connection (after a reload, so new settings apply).
    pub(crate) fn clear(&self) {
        let idle: Vec<Connection> = std::mem::take(&mut *self.lock());
        for connection in idle {
            connection.unbind();
        }
    }

    fn give_back(&self, connection: Connection) {
        if connection.is_broken() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < self.capacity {
            idle.push(connection);
        } else {
            drop(idle);
            connection.unbind();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}
