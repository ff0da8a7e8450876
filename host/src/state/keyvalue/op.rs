//! One key-value operation as a backend receives it, and its answer.

/// What the guest asked of a bucket (keys and values already checked against the limits).
#[derive(Debug)]
pub enum Op {
    Get(String),
    Set(String, Vec<u8>),
    Delete(String),
    Exists(String),
    ListKeys(Option<u64>),
    Increment(String, u64),
    GetMany(Vec<String>),
    SetMany(Vec<(String, Vec<u8>)>),
    DeleteMany(Vec<String>),
}

/// Every operation's name (the WIT function's), as metrics label them; `Op::index` is the position.
pub const OP_NAMES: [&str; 9] =
    ["get", "set", "delete", "exists", "list-keys", "increment", "get-many", "set-many", "delete-many"];

impl Op {
    /// The operation's position in [`OP_NAMES`].
    pub fn index(&self) -> usize {
        match self {
            Op::Get(_) => 0,
            Op::Set(..) => 1,
            Op::Delete(_) => 2,
            Op::Exists(_) => 3,
            Op::ListKeys(_) => 4,
            Op::Increment(..) => 5,
            Op::GetMany(_) => 6,
            Op::SetMany(_) => 7,
            Op::DeleteMany(_) => 8,
        }
    }

    /// The operation's name in metrics and messages.
    pub fn name(&self) -> &'static str {
        OP_NAMES[self.index()]
    }
}

/// A backend's answer.
#[derive(Debug, PartialEq)]
pub enum Reply {
    Value(Option<Vec<u8>>),
    Done,
    Exists(bool),
    /// A page of keys and the cursor of the next page, if there is one.
    Keys(Vec<String>, Option<u64>),
    Counter(u64),
    Values(Vec<Option<(String, Vec<u8>)>>),
}

/// Why an operation failed: the guest's request (the bucket is fine), too much at once, the
/// request's clock, or the backend.
#[derive(Debug, PartialEq)]
pub enum Failure {
    /// The operation cannot be done on this data (incrementing a value that is no counter, a key
    /// or value over the limits...).
    Refused(String),
    /// The worker already has as many operations waiting or in flight as it allows.
    Busy(String),
    /// The request's clock (or the longest any operation may take) ran out first.
    Timeout(String),
    /// The backend failed (I/O, a lock held too long, a lost connection, a stopped thread).
    Backend(String),
}

/// How an operation ended, as `rustcorn_keyvalue_operations_total{outcome}` labels it.
pub const OUTCOME_NAMES: [&str; 5] = ["ok", "refused", "busy", "timeout", "error"];

impl Failure {
    /// The position of this failure's outcome in [`OUTCOME_NAMES`] (0 is `ok`).
    pub fn outcome(&self) -> usize {
        match self {
            Failure::Refused(_) => 1,
            Failure::Busy(_) => 2,
            Failure::Timeout(_) => 3,
            Failure::Backend(_) => 4,
        }
    }

    pub fn into_message(self) -> String {
        match self {
            Failure::Refused(m) | Failure::Busy(m) | Failure::Timeout(m) | Failure::Backend(m) => m,
        }
    }
}
