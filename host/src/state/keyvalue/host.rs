//! The `wasi:keyvalue` host functions (bindings generated from `wit/deps/keyvalue.wit`): each
//! checks the bucket handle, hands the operation to `Keyvalue::call` and maps its answer.
use super::op::{Op, Reply};
use crate::state::StateCtxView;
use wasmtime::component::Resource;

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit/deps/keyvalue.wit",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::BucketHandle,
        },
    });
}

use generated::wasi::keyvalue::{atomics, batch, store};
use store::Error;

/// An open bucket: the index of a granted bucket.
pub struct BucketHandle {
    index: usize,
}

type Answer<T> = wasmtime::Result<Result<T, Error>>;

impl StateCtxView<'_> {
    /// Runs `op` on the bucket behind `handle`; a backend failure is the guest's `other` error.
    async fn run(&mut self, handle: &Resource<BucketHandle>, op: Op) -> wasmtime::Result<Result<Reply, Error>> {
        let index = self.table.get(handle)?.index;
        Ok(self.state.keyvalue.call(index, op, self.deadline).await.map_err(Error::Other))
    }
}

/// The reply a successful operation must have; any other is a host bug, reported to the guest.
fn unexpected<T>(reply: Reply) -> Result<T, Error> {
    Err(Error::Other(format!("internal error: unexpected reply {reply:?}")))
}

impl store::Host for StateCtxView<'_> {
    async fn open(&mut self, identifier: String) -> Answer<Resource<BucketHandle>> {
        match self.state.keyvalue.find(&identifier) {
            Some(index) => Ok(Ok(self.table.push(BucketHandle { index })?)),
            None => Ok(Err(Error::NoSuchStore)),
        }
    }
}

impl store::HostBucket for StateCtxView<'_> {
    async fn get(&mut self, bucket: Resource<BucketHandle>, key: String) -> Answer<Option<Vec<u8>>> {
        Ok(self.run(&bucket, Op::Get(key)).await?.and_then(|r| match r {
            Reply::Value(v) => Ok(v),
            other => unexpected(other),
        }))
    }

    async fn set(&mut self, bucket: Resource<BucketHandle>, key: String, value: Vec<u8>) -> Answer<()> {
        Ok(self.run(&bucket, Op::Set(key, value)).await?.and_then(done))
    }

    async fn delete(&mut self, bucket: Resource<BucketHandle>, key: String) -> Answer<()> {
        Ok(self.run(&bucket, Op::Delete(key)).await?.and_then(done))
    }

    async fn exists(&mut self, bucket: Resource<BucketHandle>, key: String) -> Answer<bool> {
        Ok(self.run(&bucket, Op::Exists(key)).await?.and_then(|r| match r {
            Reply::Exists(found) => Ok(found),
            other => unexpected(other),
        }))
    }

    async fn list_keys(&mut self, bucket: Resource<BucketHandle>, cursor: Option<u64>) -> Answer<store::KeyResponse> {
        Ok(self.run(&bucket, Op::ListKeys(cursor)).await?.and_then(|r| match r {
            Reply::Keys(keys, cursor) => Ok(store::KeyResponse { keys, cursor }),
            other => unexpected(other),
        }))
    }

    async fn drop(&mut self, bucket: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

fn done(reply: Reply) -> Result<(), Error> {
    match reply {
        Reply::Done => Ok(()),
        other => unexpected(other),
    }
}

impl atomics::Host for StateCtxView<'_> {
    async fn increment(&mut self, bucket: Resource<BucketHandle>, key: String, delta: u64) -> Answer<u64> {
        Ok(self.run(&bucket, Op::Increment(key, delta)).await?.and_then(|r| match r {
            Reply::Counter(n) => Ok(n),
            other => unexpected(other),
        }))
    }
}

impl batch::Host for StateCtxView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> Answer<Vec<Option<(String, Vec<u8>)>>> {
        Ok(self.run(&bucket, Op::GetMany(keys)).await?.and_then(|r| match r {
            Reply::Values(values) => Ok(values),
            other => unexpected(other),
        }))
    }

    async fn set_many(&mut self, bucket: Resource<BucketHandle>, pairs: Vec<(String, Vec<u8>)>) -> Answer<()> {
        Ok(self.run(&bucket, Op::SetMany(pairs)).await?.and_then(done))
    }

    async fn delete_many(&mut self, bucket: Resource<BucketHandle>, keys: Vec<String>) -> Answer<()> {
        Ok(self.run(&bucket, Op::DeleteMany(keys)).await?.and_then(done))
    }
}

/// Links `store`, `atomics` and `batch`.
pub fn add_to_linker<T: Send + 'static, D>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> D::Data<'_>,
) -> wasmtime::Result<()>
where
    D: wasmtime::component::HasData + Send,
    for<'a> D::Data<'a>: store::Host + atomics::Host + batch::Host + Send,
{
    store::add_to_linker::<T, D>(linker, get)?;
    atomics::add_to_linker::<T, D>(linker, get)?;
    batch::add_to_linker::<T, D>(linker, get)?;
    Ok(())
}
