//! The function's `FileDescriptorSet` as bytes: split into its files without
//! decoding them (decoding with prost would drop the custom options the proxy
//! reads, such as `cloudstate.entity_key` and `google.api.http`), with files that
//! appear more than once merged. Some SDKs put one file into the set once per
//! entity; identical copies are one file, different ones are an error.

use prost::{
    bytes::Buf,
    encoding::{decode_key, decode_varint, encode_key, encode_varint, skip_field, DecodeContext, WireType},
    Message,
};

/// The files of a descriptor set, each once, in their first order.
#[derive(Debug, Clone, Default)]
pub struct DescriptorFiles {
    files: Vec<RawFile>,
}

#[derive(Debug, Clone)]
struct RawFile {
    name: String,
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    #[error("the descriptor set is not a serialized google.protobuf.FileDescriptorSet ({0})")]
    Malformed(String),
    #[error(
        "the descriptor set holds two different files named {name:?}: one defines {first}, \
         the other {second}; give each file its own name"
    )]
    Conflict {
        name: String,
        first: String,
        second: String,
    },
    #[error("the descriptor set's imports {0}; protobuf files may not import each other in a cycle")]
    Imports(String),
    #[error("file {name:?} declares syntax {syntax:?}; Strata reads \"proto2\" and \"proto3\" files")]
    Syntax { name: String, syntax: String },
}

/// How deep imports may nest. Descriptor libraries resolve imports
/// recursively, so a hostile set must not reach them with a cycle or a chain
/// deep enough to exhaust the stack (a fuzzing find).
const MAX_IMPORT_DEPTH: usize = 64;

impl DescriptorFiles {
    /// Splits a serialized `FileDescriptorSet` into files, merging identical
    /// repeats of a file; a file name used for two different files is an error.
    pub fn parse(set: &[u8]) -> Result<Self, DescriptorError> {
        let mut files: Vec<RawFile> = Vec::new();
        for bytes in length_delimited_fields(set, 1)? {
            let name = file_name(&bytes)?;
            check_syntax(&name, &bytes)?;
            match files.iter().find(|f| f.name == name) {
                Some(known) if known.bytes == bytes => {}
                Some(known) => {
                    return Err(DescriptorError::Conflict {
                        first: summary(&known.bytes),
                        second: summary(&bytes),
                        name,
                    })
                }
                None => files.push(RawFile { name, bytes }),
            }
        }
        check_imports(&files)?;
        Ok(Self { files })
    }

    /// Adds the files of another set that this one lacks (a file it has already
    /// keeps its first version).
    pub fn extend_from(&mut self, other: &DescriptorFiles) {
        for file in &other.files {
            if !self.files.iter().any(|f| f.name == file.name) {
                self.files.push(file.clone());
            }
        }
    }

    /// The serialized `FileDescriptorSet` of the merged files.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for file in &self.files {
            encode_key(1, WireType::LengthDelimited, &mut out);
            encode_varint(file.bytes.len() as u64, &mut out);
            out.extend_from_slice(&file.bytes);
        }
        out
    }

    /// The serialized `FileDescriptorProto` named `name`, as the function sent it.
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.iter().find(|f| f.name == name).map(|f| f.bytes.as_slice())
    }
}

/// The bytes of every length-delimited field `number` of a message.
fn length_delimited_fields(mut buf: &[u8], number: u32) -> Result<Vec<Vec<u8>>, DescriptorError> {
    let malformed = |e: prost::DecodeError| DescriptorError::Malformed(e.to_string());
    let mut found = Vec::new();
    while buf.has_remaining() {
        let (field, wire_type) = decode_key(&mut buf).map_err(malformed)?;
        if field == number && wire_type == WireType::LengthDelimited {
            let len = decode_varint(&mut buf).map_err(malformed)? as usize;
            if len > buf.remaining() {
                return Err(DescriptorError::Malformed("a field runs past the end".into()));
            }
            found.push(buf[..len].to_vec());
            buf.advance(len);
        } else {
            skip_field(wire_type, field, &mut buf, DecodeContext::default()).map_err(malformed)?;
        }
    }
    Ok(found)
}

/// Refuses an import cycle, or imports nested deeper than [`MAX_IMPORT_DEPTH`]
/// (without recursion: Kahn's order over the files, counting depth as it goes).
fn check_imports(files: &[RawFile]) -> Result<(), DescriptorError> {
    let index: std::collections::HashMap<&str, usize> =
        files.iter().enumerate().map(|(i, f)| (f.name.as_str(), i)).collect();
    // imports[i]: the files of the set that file i imports (FileDescriptorProto.dependency, field 3).
    let mut imports = Vec::with_capacity(files.len());
    for file in files {
        let mut known = Vec::new();
        for dependency in length_delimited_fields(&file.bytes, 3)? {
            let name = String::from_utf8(dependency)
                .map_err(|_| DescriptorError::Malformed("an import is not UTF-8".into()))?;
            if let Some(&i) = index.get(name.as_str()) {
                known.push(i);
            }
        }
        imports.push(known);
    }
    let mut importers = vec![Vec::new(); files.len()];
    let mut waiting: Vec<usize> = imports.iter().map(Vec::len).collect();
    for (i, known) in imports.iter().enumerate() {
        for &j in known {
            importers[j].push(i);
        }
    }
    let mut depth = vec![0usize; files.len()];
    let mut ready: Vec<usize> = (0..files.len()).filter(|&i| waiting[i] == 0).collect();
    let mut placed = 0;
    while let Some(j) = ready.pop() {
        placed += 1;
        if depth[j] > MAX_IMPORT_DEPTH {
            return Err(DescriptorError::Imports(format!(
                "nest more than {MAX_IMPORT_DEPTH} deep (at {:?})",
                files[j].name
            )));
        }
        for &i in &importers[j] {
            depth[i] = depth[i].max(depth[j] + 1);
            waiting[i] -= 1;
            if waiting[i] == 0 {
                ready.push(i);
            }
        }
    }
    if placed < files.len() {
        let cycle = (0..files.len())
            .find(|&i| waiting[i] > 0)
            .map(|i| files[i].name.clone());
        return Err(DescriptorError::Imports(format!(
            "form a cycle (through {:?})",
            cycle.unwrap_or_default()
        )));
    }
    Ok(())
}

/// Refuses a `FileDescriptorProto.syntax` (field 12) other than none,
/// "proto2" or "proto3". The descriptor library refuses it too, but panics
/// while it builds that error message (a fuzzing find), so it must not see one.
fn check_syntax(name: &str, file: &[u8]) -> Result<(), DescriptorError> {
    for syntax in length_delimited_fields(file, 12)? {
        if syntax != b"proto2" && syntax != b"proto3" {
            return Err(DescriptorError::Syntax {
                name: name.to_string(),
                syntax: String::from_utf8_lossy(&syntax).into_owned(),
            });
        }
    }
    Ok(())
}

/// `FileDescriptorProto.name` (field 1). Where the field is repeated the last
/// one counts, as in every protobuf decoder (reading the first let a file that
/// imports itself under its second name past the cycle check: a fuzzing find).
fn file_name(file: &[u8]) -> Result<String, DescriptorError> {
    let name = length_delimited_fields(file, 1)?
        .into_iter()
        .next_back()
        .ok_or_else(|| DescriptorError::Malformed("a file has no name".into()))?;
    String::from_utf8(name).map_err(|_| DescriptorError::Malformed("a file name is not UTF-8".into()))
}

/// What a file defines, for an error message: its services, else its messages.
fn summary(file: &[u8]) -> String {
    let Ok(proto) = prost_types::FileDescriptorProto::decode(file) else {
        return "something unreadable".into();
    };
    let package = proto.package();
    let qualify = |name: &str| {
        if package.is_empty() {
            name.to_string()
        } else {
            format!("{package}.{name}")
        }
    };
    let (kind, names): (&str, Vec<String>) = if proto.service.is_empty() {
        (
            "messages",
            proto.message_type.iter().map(|m| qualify(m.name())).collect(),
        )
    } else {
        ("services", proto.service.iter().map(|s| qualify(s.name())).collect())
    };
    if names.is_empty() {
        "nothing".into()
    } else {
        format!("{kind} {}", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::{FileDescriptorProto, FileDescriptorSet, ServiceDescriptorProto};

    fn file(name: &str, service: &str) -> FileDescriptorProto {
        FileDescriptorProto {
            name: Some(name.into()),
            package: Some("orders".into()),
            service: vec![ServiceDescriptorProto {
                name: Some(service.into()),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn set(files: Vec<FileDescriptorProto>) -> Vec<u8> {
        FileDescriptorSet { file: files }.encode_to_vec()
    }

    #[test]
    fn identical_repeats_are_one_file() {
        let orders = file("orders/orders.proto", "Orders");
        let other = file("other.proto", "Other");
        let files = DescriptorFiles::parse(&set(vec![orders.clone(), other.clone(), orders.clone()])).unwrap();
        let merged = FileDescriptorSet::decode(files.encode().as_slice()).unwrap();
        assert_eq!(merged.file, vec![orders.clone(), other]);
        assert_eq!(
            files.file("orders/orders.proto"),
            Some(orders.encode_to_vec().as_slice())
        );
        assert_eq!(files.file("missing.proto"), None);
    }

    #[test]
    fn a_name_for_two_different_files_is_an_error_naming_both() {
        let error = DescriptorFiles::parse(&set(vec![
            file("orders/orders.proto", "Orders"),
            file("orders/orders.proto", "Stock"),
        ]))
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "the descriptor set holds two different files named \"orders/orders.proto\": one defines \
             services orders.Orders, the other services orders.Stock; give each file its own name"
        );
    }

    #[test]
    fn a_file_is_named_by_its_last_name_field() {
        // Named "x.proto" then "a.proto", importing (publicly) "a.proto": itself.
        let mut file = Vec::new();
        for (field, value) in [(1u32, "x.proto"), (1, "a.proto"), (3, "a.proto")] {
            encode_key(field, WireType::LengthDelimited, &mut file);
            encode_varint(value.len() as u64, &mut file);
            file.extend_from_slice(value.as_bytes());
        }
        encode_key(10, WireType::Varint, &mut file);
        encode_varint(0, &mut file);
        let mut set = Vec::new();
        encode_key(1, WireType::LengthDelimited, &mut set);
        encode_varint(file.len() as u64, &mut set);
        set.extend_from_slice(&file);
        let error = DescriptorFiles::parse(&set).unwrap_err();
        assert!(matches!(error, DescriptorError::Imports(_)), "{error}");
    }

    #[test]
    fn an_unknown_syntax_is_an_error_naming_the_file() {
        let mut editions = file("orders/orders.proto", "Orders");
        editions.syntax = Some("editions".into());
        let error = DescriptorFiles::parse(&set(vec![editions])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "file \"orders/orders.proto\" declares syntax \"editions\"; Strata reads \"proto2\" and \"proto3\" files"
        );
        let mut proto3 = file("orders/orders.proto", "Orders");
        proto3.syntax = Some("proto3".into());
        DescriptorFiles::parse(&set(vec![proto3])).unwrap();
        // The fuzzing find (the descriptor set of its EntitySpec): a file with a
        // garbled syntax and a public import index that points nowhere.
        let found = [
            0x0a, 0x14, 0x0a, 0x07, b'a', b'.', b'p', b'r', b'o', b't', b'o', 0x62, 0x07, b'.', b'a', b'p', b'r', b'o',
            b't', b'o', 0x50, 0x00,
        ];
        assert!(matches!(
            DescriptorFiles::parse(&found),
            Err(DescriptorError::Syntax { .. })
        ));
    }

    #[test]
    fn an_import_cycle_or_a_deep_chain_is_an_error_not_a_stack_overflow() {
        // A file that publicly imports itself (what the fuzzer found), and two
        // that import each other.
        let mut selfish = file("a.proto", "A");
        selfish.dependency = vec!["a.proto".into()];
        selfish.public_dependency = vec![0];
        let error = DescriptorFiles::parse(&set(vec![selfish])).unwrap_err();
        assert!(error.to_string().contains("cycle"), "{error}");
        let mut a = file("a.proto", "A");
        a.dependency = vec!["b.proto".into()];
        let mut b = file("b.proto", "B");
        b.dependency = vec!["a.proto".into()];
        assert!(matches!(
            DescriptorFiles::parse(&set(vec![a, b])),
            Err(DescriptorError::Imports(_))
        ));

        let chain = |length: usize| {
            (0..length)
                .map(|i| {
                    let mut f = file(&format!("f{i}.proto"), &format!("S{i}"));
                    if i > 0 {
                        f.dependency = vec![format!("f{}.proto", i - 1)];
                        f.public_dependency = vec![0];
                    }
                    f
                })
                .collect::<Vec<_>>()
        };
        assert!(DescriptorFiles::parse(&set(chain(MAX_IMPORT_DEPTH + 1))).is_ok());
        let error = DescriptorFiles::parse(&set(chain(MAX_IMPORT_DEPTH + 2))).unwrap_err();
        assert!(error.to_string().contains("deep"), "{error}");
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            DescriptorFiles::parse(&[0x0a, 0x05, 1]),
            Err(DescriptorError::Malformed(_))
        ));
    }
}
