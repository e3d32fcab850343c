// The web console's static files (backend/web/*), compiled into the binary
// by backend/embed_web.cmake at build time: no build step, nothing to
// install next to the binary, and nothing loaded from the internet.
// Thread-safety: immutable data.
#pragma once

#include <cstddef>
#include <string_view>

namespace sidetrace::backend {

struct WebAsset {
  const char* path;          // "/index.html"
  const char* content_type;  // "text/html; charset=utf-8"
  const char* data;
  size_t size;
};

// The asset served at `path`, or nullptr.
const WebAsset* FindWebAsset(std::string_view path);

}  // namespace sidetrace::backend
