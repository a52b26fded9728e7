//go:build cgo

package llmlink

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// The values of llm_datadist's LLMStatusCode and llmlink's own codes, as
// the ABI documents them (ffi/llmlink.h), by their C names.
var abiStatuses = []struct {
	name  string
	value uint32
	s     Status
}{
	{"SUCCESS", 0x00000000, StatusSuccess}, {"FAILED", 0xFFFFFFFF, StatusFailed},
	{"WAIT_PROCESS_TIMEOUT", 0x5010B001, StatusWaitProcessTimeout},
	{"KV_CACHE_NOT_EXIST", 0x5010B002, StatusKVCacheNotExist},
	{"REPEAT_REQUEST", 0x5010B003, StatusRepeatRequest},
	{"REQUEST_ALREADY_COMPLETED", 0x5010B004, StatusRequestAlreadyCompleted},
	{"PARAM_INVALID", 0x5010B005, StatusParamInvalid},
	{"ENGINE_FINALIZED", 0x5010B006, StatusEngineFinalized},
	{"NOT_YET_LINK", 0x5010B007, StatusNotYetLink}, {"ALREADY_LINK", 0x5010B008, StatusAlreadyLink},
	{"LINK_FAILED", 0x5010B009, StatusLinkFailed}, {"UNLINK_FAILED", 0x5010B00A, StatusUnlinkFailed},
	{"NOTIFY_PROMPT_UNLINK_FAILED", 0x5010B00B, StatusNotifyPromptUnlinkFailed},
	{"CLUSTER_NUM_EXCEED_LIMIT", 0x5010B00C, StatusClusterNumExceedLimit},
	{"PROCESSING_LINK", 0x5010B00D, StatusProcessingLink},
	{"DEVICE_OUT_OF_MEMORY", 0x5010B00E, StatusDeviceOutOfMemory},
	{"PREFIX_ALREADY_EXIST", 0x5010B00F, StatusPrefixAlreadyExist},
	{"PREFIX_NOT_EXIST", 0x5010B010, StatusPrefixNotExist},
	{"SEQ_LEN_OVER_LIMIT", 0x5010B011, StatusSeqLenOverLimit},
	{"NO_FREE_BLOCK", 0x5010B012, StatusNoFreeBlock},
	{"BLOCKS_OUT_OF_MEMORY", 0x5010B013, StatusBlocksOutOfMemory},
	{"EXIST_LINK", 0x5010B018, StatusExistLink},
	{"FEATURE_NOT_ENABLED", 0x5010B019, StatusFeatureNotEnabled},
	{"TIMEOUT", 0x5010B01A, StatusTimeout}, {"LINK_BUSY", 0x5010B01B, StatusLinkBusy},
	{"OUT_OF_MEMORY", 0x5010B01C, StatusOutOfMemory},
	{"NOT_INITIALIZED", 0x5010B101, StatusNotInitialized},
	{"ALREADY_INITIALIZED", 0x5010B102, StatusAlreadyInitialized},
	{"VERSION_MISMATCH", 0x5010B103, StatusVersionMismatch},
	{"PROTOCOL_ERROR", 0x5010B104, StatusProtocolError},
	{"ROLE_NOT_ALLOWED", 0x5010B105, StatusRoleNotAllowed},
	{"CLUSTER_ID_MISMATCH", 0x5010B106, StatusClusterIDMismatch},
	{"NETWORK_ERROR", 0x5010B107, StatusNetworkError},
	{"CACHE_KEY_ALREADY_EXIST", 0x5010B108, StatusCacheKeyAlreadyExist},
	{"CACHE_IN_USE", 0x5010B109, StatusCacheInUse},
	{"AUTH_FAILED", 0x5010B10A, StatusAuthFailed},
	{"ACCESS_DENIED", 0x5010B10B, StatusAccessDenied},
	{"TASK_PENDING", 0x5010B10C, StatusTaskPending},
	{"CANCELLED", 0x5010B10D, StatusCancelled},
	{"CANCELLED_LINK_CLOSED", 0x5010B10E, StatusCancelledLinkClosed},
	{"NOTIFY_QUEUE_FULL", 0x5010B10F, StatusNotifyQueueFull},
}

func TestStatusValuesAndNames(t *testing.T) {
	if len(abiStatuses) != len(allStatuses) {
		t.Fatalf("%d statuses in the ABI table, %d in the package", len(abiStatuses), len(allStatuses))
	}
	for _, c := range abiStatuses {
		if uint32(c.s) != c.value {
			t.Errorf("%s: %#x, the ABI says %#x", c.name, uint32(c.s), c.value)
		}
		// String is the C library's name: LLM_ for llm_datadist's codes,
		// LLMLINK_ for llmlink's own (above 0x5010B100).
		want := "LLM_" + c.name
		if c.value > 0x5010B100 && c.value != 0xFFFFFFFF {
			want = "LLMLINK_" + c.name
		}
		if got := c.s.String(); got != want {
			t.Errorf("%#x: String %q, want %q", c.value, got, want)
		}
		if c.s.Description() == "" {
			t.Errorf("%s: no description", c.name)
		}
		if got := fmt.Sprint(c.s); got != want {
			t.Errorf("%s: fmt prints %q", c.name, got)
		}
	}
	if got := Status(0x12345).String(); got != "LLM_UNKNOWN_STATUS" {
		t.Errorf("unknown status: %q", got)
	}
}

func TestErrorIsAndAs(t *testing.T) {
	_, err := NewEngine(RoleDecoder, 5, map[string]string{"llmlink.NoSuchOption": "1"})
	wrapped := fmt.Errorf("scheduler: %w", err)
	var le *Error
	if !errors.As(wrapped, &le) {
		t.Fatalf("errors.As: %v", err)
	}
	if le.Status != StatusParamInvalid || le.Op != "NewEngine" || !strings.Contains(le.Msg, "llmlink.NoSuchOption") {
		t.Fatalf("got %+v", le)
	}
	if !errors.Is(wrapped, ErrParamInvalid) || !errors.Is(wrapped, &Error{Status: StatusParamInvalid}) {
		t.Fatal("errors.Is by status")
	}
	if errors.Is(wrapped, ErrLinkFailed) {
		t.Fatal("errors.Is matched another status")
	}
	for _, s := range []string{"NewEngine", "LLM_PARAM_INVALID", "llmlink.NoSuchOption"} {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("%q lacks %q", err.Error(), s)
		}
	}
	var nilErr *Error
	if (&Error{Status: StatusTimeout}).Is(nilErr) {
		t.Fatal("matched a nil *Error")
	}
}

func TestNewEngineErrors(t *testing.T) {
	cases := []struct {
		what   string
		role   Role
		opts   map[string]string
		want   Status
		needle string
	}{
		{"unknown key", RoleDecoder, map[string]string{"llm.Bogus": "1"}, StatusParamInvalid, "llm.Bogus"},
		{"value out of range", RoleDecoder, map[string]string{"llm.SyncKvCacheWaitTime": "0"}, StatusParamInvalid, "llm.SyncKvCacheWaitTime"},
		{"NUL in a value", RoleDecoder, map[string]string{"llm.SyncKvCacheWaitTime": "10\x000"}, StatusParamInvalid, "NUL"},
		{"bad listen address", RolePrompt, map[string]string{"llm.listenIpInfo": "999.1.1.1:0"}, StatusParamInvalid, "listenIpInfo"},
		{"no such role", Role(9), nil, StatusParamInvalid, "role"},
	}
	for _, c := range cases {
		e, err := NewEngine(c.role, 7, c.opts)
		if e != nil {
			e.Close()
		}
		wantErrMsg(t, c.what, err, c.want, "NewEngine", c.needle)
	}
}

func wantErrMsg(t *testing.T, what string, err error, want Status, op, needle string) {
	t.Helper()
	le := wantErr(t, what, err, want, op)
	if !strings.Contains(le.Msg, needle) {
		t.Fatalf("%s: message %q does not name %q", what, le.Msg, needle)
	}
}

func TestVersions(t *testing.T) {
	want := fmt.Sprintf("%d.%d.%d", HeaderVersionMajor, HeaderVersionMinor, HeaderVersionPatch)
	if LibraryVersion() != want {
		t.Fatalf("library %s, header %s", LibraryVersion(), want)
	}
	if LibraryVersionNumber() != HeaderVersionMajor*10000+HeaderVersionMinor*100+HeaderVersionPatch {
		t.Fatalf("version number %d", LibraryVersionNumber())
	}
	if err := checkLibraryVersion("test"); err != nil {
		t.Fatal(err)
	}
}
