//! SMTP/LMTP requests in memory: recipient checks with quotas, and deliveries that are
//! begun, appended to, then committed (all-or-nothing or per recipient) or aborted.

use bytes::Bytes;
use tidegate_core::{Account, Failure, RecipientCheck, Reply, Request};

use super::{Inner, MemStore};
use crate::step::FailKind;

impl MemStore {
    /// Sets `user`'s mailbox limit in octets.
    pub fn set_quota(&self, user: &str, bytes: u64) {
        self.lock().quotas.insert(user.to_owned(), bytes);
    }

    /// Makes the next store request of `kind` fail with a temporary error.
    pub fn fail_next(&self, kind: FailKind) {
        self.lock().fail_next.push(kind);
    }

    /// Deliveries begun and neither committed nor aborted yet.
    pub fn pending_deliveries(&self) -> usize {
        self.lock().pending.len()
    }

    /// Deliveries discarded by `AbortDelivery` so far.
    pub fn deliveries_aborted(&self) -> u64 {
        self.lock().deliveries_aborted
    }

    /// Deliveries begun so far.
    pub fn deliveries_begun(&self) -> u64 {
        self.lock().deliveries_begun
    }
}

/// Takes a pending `@store-fail` of this kind.
fn failing(inner: &mut Inner, kind: FailKind) -> bool {
    match inner.fail_next.iter().position(|&k| k == kind) {
        Some(i) => {
            inner.fail_next.remove(i);
            true
        }
        None => false,
    }
}

fn temporary(why: &str) -> Failure {
    Failure::Temporary(why.into())
}

/// The user an address names: names compare without regard to case, like the real
/// store's normalised addresses.
fn lookup(inner: &Inner, address: &str) -> Option<String> {
    inner
        .users
        .keys()
        .find(|name| name.eq_ignore_ascii_case(address))
        .cloned()
}

fn is_local_domain(inner: &Inner, domain: &str) -> bool {
    inner.users.keys().any(|name| {
        name.rsplit_once('@')
            .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
    })
}

fn usage(inner: &Inner, user: &str) -> u64 {
    inner
        .boxes
        .get(user)
        .map_or(0, |b| b.iter().map(|m| m.bytes.len() as u64).sum())
}

/// Whether `size` more octets fit under `user`'s quota.
fn fits(inner: &Inner, user: &str, size: u64) -> bool {
    inner
        .quotas
        .get(user)
        .is_none_or(|&quota| usage(inner, user).saturating_add(size) <= quota)
}

/// Carries out the SMTP-family requests (the POP3 ones are answered by the caller).
pub(super) fn execute(inner: &mut Inner, request: Request) -> Reply {
    match request {
        Request::CheckRecipient { address, size_hint } => {
            if failing(inner, FailKind::Recipient) {
                return Reply::Failed(temporary("scripted failure"));
            }
            Reply::Recipient(check_recipient(inner, &address, size_hint))
        }
        Request::BeginDelivery { header } => {
            if failing(inner, FailKind::Begin) {
                return Reply::Failed(temporary("scripted failure"));
            }
            inner.deliveries_begun += 1;
            let id = inner.deliveries_begun;
            inner.pending.insert(id, header.to_vec());
            Reply::DeliveryStarted(tidegate_core::DeliveryId(id))
        }
        Request::AppendDelivery { delivery, bytes } => {
            let fail = failing(inner, FailKind::Append);
            match inner.pending.get_mut(&delivery.0) {
                None => Reply::Failed(Failure::Permanent("no such message in progress".into())),
                Some(_) if fail => Reply::Failed(temporary("scripted failure")),
                Some(data) => {
                    data.extend_from_slice(&bytes);
                    Reply::Done
                }
            }
        }
        Request::CommitDelivery {
            delivery,
            recipients,
            all_or_nothing,
        } => {
            let Some(data) = inner.pending.remove(&delivery.0) else {
                return Reply::Failed(temporary("no such message in progress"));
            };
            if failing(inner, FailKind::Commit) {
                let all = recipients.iter().map(|_| Err(temporary("scripted")));
                return Reply::Delivered(all.collect());
            }
            Reply::Delivered(commit(inner, data.into(), &recipients, all_or_nothing))
        }
        Request::AbortDelivery { delivery } => {
            // Aborting what is already gone is not an error (the session may abort
            // after a store timeout).
            if inner.pending.remove(&delivery.0).is_some() {
                inner.deliveries_aborted += 1;
            }
            Reply::Done
        }
        other => Reply::Failed(Failure::Permanent(format!("MemStore cannot do {other:?}"))),
    }
}

fn check_recipient(inner: &Inner, address: &str, size_hint: Option<u64>) -> RecipientCheck {
    let Some((_, domain)) = address.rsplit_once('@') else {
        return RecipientCheck::Unknown;
    };
    if !is_local_domain(inner, domain) {
        return RecipientCheck::NotLocal;
    }
    match lookup(inner, address) {
        None => RecipientCheck::Unknown,
        Some(user) if !fits(inner, &user, size_hint.unwrap_or(0).max(1)) => {
            RecipientCheck::OverQuota
        }
        Some(user) => RecipientCheck::Local(Account(user)),
    }
}

/// One result per recipient; an account named twice gets one copy. With
/// `all_or_nothing` the first failure fails everyone (the others as "not delivered"),
/// as the real store does.
fn commit(
    inner: &mut Inner,
    data: Bytes,
    recipients: &[Account],
    all_or_nothing: bool,
) -> Vec<Result<(), Failure>> {
    let size = data.len() as u64;
    let checks: Vec<Result<(), Failure>> = recipients
        .iter()
        .map(|account| {
            if !inner.users.contains_key(&account.0) {
                Err(Failure::Permanent("no such mailbox".into()))
            } else if !fits(inner, &account.0, size) {
                Err(Failure::OverQuota)
            } else {
                Ok(())
            }
        })
        .collect();
    if all_or_nothing && let Some(first) = checks.iter().position(Result::is_err) {
        return checks
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                if i == first {
                    r
                } else {
                    Err(temporary("not delivered"))
                }
            })
            .collect();
    }
    let mut delivered: Vec<&str> = Vec::new();
    for (account, check) in recipients.iter().zip(&checks) {
        if check.is_ok() && !delivered.contains(&account.0.as_str()) {
            MemStore::append(inner, &account.0, data.clone());
            delivered.push(&account.0);
        }
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidegate_core::DeliveryId;
    use tidegate_store::Executor as _;

    fn begin(store: &MemStore) -> DeliveryId {
        match store.execute(Request::BeginDelivery {
            header: Bytes::from_static(b"H: 1\r\n"),
        }) {
            Reply::DeliveryStarted(id) => id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn recipients_quota_and_commit_modes() {
        let store = MemStore::new();
        store.add_user("alice@example.test", "pw", false);
        store.add_user("bob@example.test", "pw", false);
        store.set_quota("bob@example.test", 5);
        let check = |a: &str, size| match store.execute(Request::CheckRecipient {
            address: a.into(),
            size_hint: size,
        }) {
            Reply::Recipient(r) => r,
            other => panic!("{other:?}"),
        };
        let alice = Account("alice@example.test".into());
        let bob = Account("bob@example.test".into());
        assert_eq!(
            check("ALICE@Example.Test", None),
            RecipientCheck::Local(alice.clone())
        );
        assert_eq!(check("carol@example.test", None), RecipientCheck::Unknown);
        assert_eq!(
            check("alice@elsewhere.test", None),
            RecipientCheck::NotLocal
        );
        assert_eq!(
            check("bob@example.test", Some(11)),
            RecipientCheck::OverQuota
        );
        assert_eq!(
            check("bob@example.test", None),
            RecipientCheck::Local(bob.clone())
        );

        // SMTP: bob is over quota for the 12 bytes, so nobody gets them.
        let id = begin(&store);
        let append = Request::AppendDelivery {
            delivery: id,
            bytes: Bytes::from_static(b"body\r\n"),
        };
        assert!(matches!(store.execute(append), Reply::Done));
        let commit = |id, all_or_nothing| match store.execute(Request::CommitDelivery {
            delivery: id,
            recipients: vec![alice.clone(), bob.clone()],
            all_or_nothing,
        }) {
            Reply::Delivered(r) => r,
            other => panic!("{other:?}"),
        };
        let results = commit(id, true);
        assert!(
            matches!(results[0], Err(Failure::Temporary(_))),
            "{results:?}"
        );
        assert_eq!(results[1], Err(Failure::OverQuota));
        assert!(store.messages("alice@example.test").is_empty());
        // LMTP: alice gets it alone.
        let id = begin(&store);
        assert_eq!(commit(id, false), vec![Ok(()), Err(Failure::OverQuota)]);
        assert_eq!(
            store.messages("alice@example.test"),
            vec![Bytes::from_static(b"H: 1\r\n")]
        );
        // Abort, twice: the second is a no-op.
        let id = begin(&store);
        for _ in 0..2 {
            let abort = Request::AbortDelivery { delivery: id };
            assert!(matches!(store.execute(abort), Reply::Done));
        }
        assert_eq!(
            (store.pending_deliveries(), store.deliveries_aborted()),
            (0, 1)
        );
        store.fail_next(FailKind::Begin);
        let failed = store.execute(Request::BeginDelivery {
            header: Bytes::new(),
        });
        assert!(matches!(failed, Reply::Failed(Failure::Temporary(_))));
    }
}
