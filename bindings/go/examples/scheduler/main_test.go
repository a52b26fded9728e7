package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
)

// The test binary doubles as the prefill process (main's dispatch).
func TestMain(m *testing.M) {
	if id := os.Getenv(prefillEnv); id != "" {
		os.Exit(runPrefill(id, os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

func TestSchedulerLinksTwoPrefillsAndPulls(t *testing.T) {
	for _, transport := range []string{"auto", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			var out bytes.Buffer
			if err := run(context.Background(), os.Args[0], transport, 24, &out); err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			text := out.String()
			for _, want := range []string{
				"link_clusters: LLM_SUCCESS", "cluster 1 at 127.0.0.1:", "cluster 2 at 127.0.0.1:",
				"pull_blocks from cluster 1 (first): 24 blocks", "pull_blocks from cluster 2 (first): 24 blocks",
				"pull_blocks from cluster 1 (again): 24 blocks", "pull_blocks from cluster 2 (again): 24 blocks",
				"GiB/s, every byte checked", "transfers=4 ", "unlink_clusters: LLM_SUCCESS",
			} {
				if !strings.Contains(text, want) {
					t.Fatalf("output lacks %q:\n%s", want, text)
				}
			}
			t.Log("\n" + text)
		})
	}
}

func TestSchedulerRefusesBadBlockCount(t *testing.T) {
	if err := run(context.Background(), os.Args[0], "auto", 0, &bytes.Buffer{}); err == nil {
		t.Fatal("0 blocks accepted")
	}
}
