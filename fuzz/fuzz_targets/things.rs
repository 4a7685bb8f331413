//! The fixture service (`proxy/fixtures/things.proto`) the request and reply
//! targets run against, compiled once per fuzzing process.

use std::sync::OnceLock;

use strata_proxy::fuzzing::ServiceModel;

pub fn things() -> &'static ServiceModel {
    static MODEL: OnceLock<ServiceModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../proxy/fixtures");
        let mut compiler = protox::Compiler::new([fixtures, strata_proto::PROTO_DIR]).expect("the fixture's folders");
        compiler.include_imports(true);
        compiler.open_files(["things.proto"]).expect("the fixture compiles");
        let spec = strata_proxy::fuzzing::things_spec(compiler.encode_file_descriptor_set());
        ServiceModel::from_spec(&spec).expect("the fixture's model")
    })
}
