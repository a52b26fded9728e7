module github.com/llmlink/llmlink/bindings/go

go 1.19
