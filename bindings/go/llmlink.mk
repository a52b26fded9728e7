# bindings/go/llmlink.mk - the Go binding's suite, included by the top
# Makefile (which defines BUILD, STATIC_LIB, SHARED_LIB, VERSION, Q, say).
#
#   make test-go     go vet and go test -race of bindings/go against the
#                    static library of $(BUILD), then a smoke run of the
#                    -tags llmlink_pkgconfig build against the shared library
#                    staged as if installed (a .pc file of its own).
#
# No module is downloaded: the package has no dependency.

GO ?= go
TEST_SUITES_EXTRA += test-go

GO_BUILD_ABS := $(abspath $(BUILD))
GO_PC_STAGE  := $(GO_BUILD_ABS)/go-pkgconfig
# The Go build cache knows neither libllmlink.a nor llmlink.h (they lie
# outside the package); a define carrying their checksum is part of every
# cache key, so a changed library or header rebuilds the package.
go_stamp = $$(cat $(abspath $(STATIC_LIB) $(HEADER)) | cksum | cut -d' ' -f1)
# Where no home directory is set (some CI runners), Go has no default
# cache: give it one inside the build directory.
ifeq ($(strip $(HOME)$(XDG_CACHE_HOME)$(GOCACHE)),)
GO_CACHE_ENV := GOCACHE=$(GO_BUILD_ABS)/go-cache GOPATH=$(GO_BUILD_ABS)/go-path
endif
GO_ENV = CGO_ENABLED=1 CGO_CFLAGS="-O2 -g -DLLMLINK_GO_STAMP=$(go_stamp)" $(GO_CACHE_ENV)

.PHONY: test-go go-vet go-test go-test-pkgconfig

test-go: go-vet go-test go-test-pkgconfig

go-vet: $(STATIC_LIB)
	$(say) GOVET bindings/go
	$(Q)cd bindings/go && $(GO_ENV) CGO_LDFLAGS="-L$(GO_BUILD_ABS)" $(GO) vet ./...

go-test: $(STATIC_LIB) go-vet
	$(say) GOTEST bindings/go
	$(Q)cd bindings/go && $(GO_ENV) CGO_LDFLAGS="-L$(GO_BUILD_ABS)" $(GO) test -race -count=1 ./...

# The shared library, header and a .pc as `make install PREFIX=$(GO_PC_STAGE)`
# would lay them out, without touching $(BUILD)/llmlink.pc.
go-test-pkgconfig: $(SHARED_LIB) $(SHARED_SO) $(STATIC_LIB) go-test
	$(say) GOTEST 'bindings/go (-tags llmlink_pkgconfig)'
	$(Q)rm -rf $(GO_PC_STAGE) && mkdir -p $(GO_PC_STAGE)/include $(GO_PC_STAGE)/lib/pkgconfig
	$(Q)cp $(HEADER) $(GO_PC_STAGE)/include/llmlink.h
	$(Q)cp -P $(BUILD)/libllmlink.so $(BUILD)/libllmlink.so.* $(GO_PC_STAGE)/lib/
	$(Q)sed -e 's|@PREFIX@|$(GO_PC_STAGE)|' -e 's|@EXEC_PREFIX@|$${prefix}|' \
	    -e 's|@LIBDIR@|$${exec_prefix}/lib|' -e 's|@INCLUDEDIR@|$${prefix}/include|' \
	    -e 's|@VERSION@|$(VERSION)|' ffi/llmlink.pc.in > $(GO_PC_STAGE)/lib/pkgconfig/llmlink.pc
	$(Q)cd bindings/go && $(GO_ENV) PKG_CONFIG_PATH=$(GO_PC_STAGE)/lib/pkgconfig \
	    LD_LIBRARY_PATH=$(GO_PC_STAGE)/lib$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH} \
	    $(GO) test -race -count=1 -tags llmlink_pkgconfig \
	    -run 'TestLinkedThroughPkgConfig|TestVersions|TestLinkCheckUnlink|TestPullBlocksBytes|TestErrorIsAndAs' .
