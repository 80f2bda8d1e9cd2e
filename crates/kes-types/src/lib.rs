//! Wire-level vocabulary shared by the server, the client, the CLI, the benchmarks and the
//! fault-testing harness: KES's key-name rules, its canonical error messages, the JSON shapes of
//! every request and response, and the Go-compatible encodings (base64, RFC 3339 timestamps and
//! HTML-escaped JSON) that clients written against MinIO KES depend on byte for byte.
//!
//! Nothing here performs I/O.

pub mod b64;
pub mod error;
pub mod gojson;
pub mod name;
pub mod time;
pub mod wire;

pub use b64::Bytes64;
pub use error::{msg, KesError};
pub use gojson::{to_go_json, to_go_json_line};
pub use name::{list_prefix, valid_name, valid_pattern, MAX_NAME_LEN};
pub use time::GoTime;
