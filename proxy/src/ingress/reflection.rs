//! gRPC server reflection (v1 and v1alpha, over gRPC and gRPC-web) as
//! CloudState's proxy answers it: the list holds the reflection service itself,
//! then the function's services sorted; files come as the function sent them,
//! with their dependencies; an unknown symbol or file gets an empty answer on the
//! open stream rather than an error that ends it.

use std::sync::Arc;

use axum::{extract::Request, response::Response, routing::any, Router};
use bytes::Bytes;
use futures::StreamExt;
use http::HeaderMap;
use prost::Message;
use prost_reflect::DescriptorPool;
use tonic_reflection::pb::v1::{
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse, ErrorResponse,
    ExtensionNumberResponse, FileDescriptorResponse, ListServiceResponse, ServerReflectionRequest,
    ServerReflectionResponse, ServiceResponse,
};

use crate::{
    descriptors::DescriptorFiles,
    error::ProxyError,
    ingress::exchange::Ingress,
    ingress::grpc::{self, Flavor},
    model::Catalog,
};

const V1: &str = "grpc.reflection.v1.ServerReflection";
const V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";
/// Reflection requests are small; this bounds each one.
const MAX_REQUEST: usize = 64 * 1024;

/// One place to look symbols up: a pool and the files it was built from.
struct Source {
    pool: DescriptorPool,
    files: DescriptorFiles,
}

/// What reflection knows: the function's services and files, and its own.
pub struct Reflection {
    services: Vec<String>,
    sources: Vec<Source>,
}

impl Reflection {
    pub fn new(catalog: &Catalog) -> Self {
        let mut sources: Vec<Source> = catalog
            .models()
            .iter()
            .map(|model| Source {
                pool: model.pool.clone(),
                files: model.files.clone(),
            })
            .collect();
        for own in [
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            if let (Ok(pool), Ok(files)) = (DescriptorPool::decode(own), DescriptorFiles::parse(own)) {
                sources.push(Source { pool, files });
            }
        }
        Self {
            services: catalog.service_names(),
            sources,
        }
    }

    /// The answer to one request, as the reflection service named `own_name`.
    pub fn answer(&self, own_name: &str, request: ServerReflectionRequest) -> ServerReflectionResponse {
        let message_response = match request.message_request.clone() {
            Some(MessageRequest::ListServices(_)) => {
                let names = std::iter::once(own_name.to_string()).chain(self.services.iter().cloned());
                MessageResponse::ListServicesResponse(ListServiceResponse {
                    service: names.map(|name| ServiceResponse { name }).collect(),
                })
            }
            Some(MessageRequest::FileByFilename(name)) => {
                self.files(|source| source.pool.get_file_by_name(&name).map(|file| file.name().to_string()))
            }
            Some(MessageRequest::FileContainingSymbol(symbol)) => {
                self.files(|source| file_of_symbol(&source.pool, &symbol))
            }
            Some(MessageRequest::FileContainingExtension(extension)) => self.files(|source| {
                let message = source.pool.get_message_by_name(&extension.containing_type)?;
                let found = message
                    .extensions()
                    .find(|e| e.number() == extension.extension_number as u32)
                    .map(|e| e.parent_file().name().to_string());
                found
            }),
            Some(MessageRequest::AllExtensionNumbersOfType(type_name)) => {
                let numbers = self
                    .sources
                    .iter()
                    .find_map(|s| s.pool.get_message_by_name(&type_name))
                    .map(|m| m.extensions().map(|e| e.number() as i32).collect())
                    .unwrap_or_default();
                MessageResponse::AllExtensionNumbersResponse(ExtensionNumberResponse {
                    base_type_name: type_name,
                    extension_number: numbers,
                })
            }
            None => MessageResponse::ErrorResponse(ErrorResponse {
                error_code: tonic::Code::InvalidArgument as i32,
                error_message: "the reflection request names nothing to look up".into(),
            }),
        };
        ServerReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request),
            message_response: Some(message_response),
        }
    }

    /// The file `find` names in the first source that knows it, with every file
    /// it depends on; none when no source does.
    fn files(&self, find: impl Fn(&Source) -> Option<String>) -> MessageResponse {
        let found = self.sources.iter().find_map(|source| Some((source, find(source)?)));
        let mut files = Vec::new();
        if let Some((source, name)) = found {
            let mut pending = vec![name];
            let mut seen: Vec<String> = Vec::new();
            while let Some(name) = pending.pop() {
                if seen.contains(&name) {
                    continue;
                }
                if let Some(bytes) = source.files.file(&name) {
                    files.push(bytes.to_vec());
                }
                if let Some(file) = source.pool.get_file_by_name(&name) {
                    pending.extend(file.dependencies().map(|d| d.name().to_string()));
                }
                seen.push(name);
            }
        }
        MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
            file_descriptor_proto: files,
        })
    }
}

/// The file defining a fully qualified symbol: a service, method, message,
/// field, enum, enum value or extension.
fn file_of_symbol(pool: &DescriptorPool, symbol: &str) -> Option<String> {
    let symbol = symbol.trim_start_matches('.');
    if let Some(service) = pool.get_service_by_name(symbol) {
        return Some(service.parent_file().name().to_string());
    }
    if let Some(message) = pool.get_message_by_name(symbol) {
        return Some(message.parent_file().name().to_string());
    }
    if let Some(enumeration) = pool.get_enum_by_name(symbol) {
        return Some(enumeration.parent_file().name().to_string());
    }
    if let Some(extension) = pool.get_extension_by_name(symbol) {
        return Some(extension.parent_file().name().to_string());
    }
    // A member (method, field, enum value): look up its parent.
    let (parent, _) = symbol.rsplit_once('.')?;
    if let Some(service) = pool.get_service_by_name(parent) {
        return Some(service.parent_file().name().to_string());
    }
    if let Some(message) = pool.get_message_by_name(parent) {
        return Some(message.parent_file().name().to_string());
    }
    pool.get_enum_by_name(parent)
        .map(|e| e.parent_file().name().to_string())
}

/// The reflection routes (both versions) for an ingress serving `catalog`.
pub fn routes(catalog: &Catalog) -> Router<Ingress> {
    let reflection = Arc::new(Reflection::new(catalog));
    let mut router = Router::new();
    for own_name in [V1, V1ALPHA] {
        let reflection = reflection.clone();
        router = router.route(
            &format!("/{own_name}/ServerReflectionInfo"),
            any(move |request: Request| serve(reflection.clone(), own_name, request)),
        );
    }
    router
}

async fn serve(reflection: Arc<Reflection>, own_name: &'static str, request: Request) -> Response {
    let Some(flavor) = Flavor::of(request.headers()) else {
        return grpc::error_response(
            Flavor::Grpc,
            &ProxyError::InvalidArgument("server reflection is a gRPC service".into()),
        );
    };
    let answers = grpc::request_messages(flavor, request.into_body(), MAX_REQUEST).map(move |message| {
        let request = ServerReflectionRequest::decode(message?)
            .map_err(|e| ProxyError::InvalidArgument(format!("not a ServerReflectionRequest: {e}")))?;
        let answer = reflection.answer(own_name, request);
        Ok((Bytes::from(answer.encode_to_vec()), HeaderMap::new()))
    });
    grpc::stream_response(flavor, answers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn ask(reflection: &Reflection, request: MessageRequest) -> MessageResponse {
        reflection
            .answer(
                V1ALPHA,
                ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(request),
                },
            )
            .message_response
            .unwrap()
    }

    fn file_names(response: MessageResponse) -> Vec<String> {
        let MessageResponse::FileDescriptorResponse(files) = response else {
            panic!("expected files, got {response:?}")
        };
        files
            .file_descriptor_proto
            .iter()
            .map(|f| {
                prost_types::FileDescriptorProto::decode(f.as_slice())
                    .unwrap()
                    .name()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn lists_itself_then_the_services_sorted() {
        let (model, _) = fixtures::method("/test.things.Warehouse/Create");
        let reflection = Reflection::new(&Catalog::new(vec![Arc::new(model)]));
        let MessageResponse::ListServicesResponse(list) = ask(&reflection, MessageRequest::ListServices(String::new()))
        else {
            panic!("expected a list")
        };
        let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                V1ALPHA,
                "test.things.Auditor",
                "test.things.Clerk",
                "test.things.Warehouse"
            ]
        );
    }

    #[test]
    fn files_with_their_dependencies_and_empty_answers_for_unknown_symbols() {
        let (model, _) = fixtures::method("/test.things.Warehouse/Create");
        let reflection = Reflection::new(&Catalog::new(vec![Arc::new(model)]));
        let names = file_names(ask(
            &reflection,
            MessageRequest::FileContainingSymbol("test.things.Warehouse.Create".into()),
        ));
        assert_eq!(names[0], "things.proto");
        assert!(names.contains(&"google/api/annotations.proto".to_string()), "{names:?}");
        assert!(
            names.contains(&"google/protobuf/descriptor.proto".to_string()),
            "{names:?}"
        );
        assert!(file_names(ask(
            &reflection,
            MessageRequest::FileContainingSymbol("nonsense.blabla.Void".into())
        ))
        .is_empty());
        assert!(file_names(ask(&reflection, MessageRequest::FileByFilename("nope.proto".into()))).is_empty());
        // The reflection service describes itself too.
        let own = file_names(ask(&reflection, MessageRequest::FileContainingSymbol(V1.into())));
        assert_eq!(own.len(), 1, "{own:?}");
    }
}
