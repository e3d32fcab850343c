// TlsStream moved to common/tls/tls_stream.h (the orchestrator's forwarder
// uses it too); this name stays for http_server.cpp.
#pragma once

#include "common/tls/tls_stream.h"

namespace sidetrace::backend {
using tls::TlsStream;
}  // namespace sidetrace::backend
