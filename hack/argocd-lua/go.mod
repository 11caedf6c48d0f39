// Argo CD's Lua interpreter, to run examples/gitops/argocd health checks in tests.
// gopher-lua v1.1.1 is the version Argo CD v2.x and v3.x pin.
module projectsync.dev/hack/argocd-lua

go 1.24.0

require github.com/yuin/gopher-lua v1.1.1
