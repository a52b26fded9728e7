//go:build cgo

// Package llmlink is the Go binding of llmlink, the C library that links
// LLM decode clusters (DECODER, the client) to prefill clusters (PROMPT, the
// server) and moves the KV cache between them, with the contract of
// Huawei's llm_datadist.
//
// An Engine wraps one llmlink_t and is safe for many goroutines at once.
// LinkClusters and UnlinkClusters return the link outcome as a Status and
// per-cluster statuses, and an error only when the call itself was refused;
// every other call returns an *Error carrying the C status and message.
// Every blocking call takes a context.Context (see README.md for what a
// cancelled call leaves behind); a cancelled transfer is cancelled for
// real, fenced. Transfers can also run asynchronously (PullBlocksAsync, ...,
// TransferCacheAsync) as a *Transfer whose Wait(ctx) cancels it when ctx
// ends, completed by one dispatcher goroutine per engine that waits on the
// engine's event descriptor in Go's netpoller; Notify and Notifications
// carry small messages between linked engines. Caches are either allocated by the library
// and exposed as []byte without a copy, or registered by raw addresses of
// memory Go does not manage.
package llmlink
