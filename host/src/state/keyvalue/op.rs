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

impl Op {
    /// The operation's name in metrics and messages (the WIT function's).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Get(_) => "get",
            Op::Set(..) => "set",
            Op::Delete(_) => "delete",
            Op::Exists(_) => "exists",
            Op::ListKeys(_) => "list-keys",
            Op::Increment(..) => "increment",
            Op::GetMany(_) => "get-many",
            Op::SetMany(_) => "set-many",
            Op::DeleteMany(_) => "delete-many",
        }
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

/// Why an operation failed: the guest's request (the bucket is fine), or the backend.
#[derive(Debug, PartialEq)]
pub enum Failure {
    /// The operation cannot be done on this data (incrementing a value that is no counter...).
    Refused(String),
    /// The backend failed (I/O, a lock held too long, a lost connection, a stopped thread).
    Backend(String),
}
