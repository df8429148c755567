package backup_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vkimg/vkimg/internal/backup"
	"github.com/vkimg/vkimg/internal/datavol"
)

// BenchmarkBackup times Create, Verify and Restore of an instance with
// 10,000 tasks and 1 GB of attachments (50 files of random, incompressible
// bytes), on SQLite and PostgreSQL, and the archive's and the database
// dump's (uncompressed) size: spec SC-006 asks for a backup under 5
// minutes, the target is 30 s for each step. VKIMG_BENCH_ATTACHMENTS_MB
// sets the attachments' total size (default 1024). bench/backup.sh runs it.
func BenchmarkBackup(b *testing.B) {
	attachMB := 1024
	if s := os.Getenv("VKIMG_BENCH_ATTACHMENTS_MB"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			b.Fatalf("VKIMG_BENCH_ATTACHMENTS_MB: %v", err)
		}
		attachMB = n
	}
	for _, tc := range []struct {
		name string
		db   func(testing.TB) datavol.Database
	}{
		{"sqlite", func(testing.TB) datavol.Database { return datavol.Database{Type: datavol.SQLite} }},
		{"postgres", func(tb testing.TB) datavol.Database { db, _ := postgres(tb); return db }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			in := newInstance(b, tc.db(b))
			seedTasks(b, in, 10_000)
			seedAttachments(b, in, 50, attachMB<<20)
			ctx := context.Background()
			restored := filepath.Join(b.TempDir(), "restored", "data")
			var backupT, verifyT, restoreT time.Duration
			var size, dump int64
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				info, err := backup.Create(ctx, in.src, backup.Options{Dir: in.dir})
				if err != nil {
					b.Fatal(err)
				}
				backupT += time.Since(start)
				size += info.Size
				for _, e := range info.Manifest.Entries {
					if e.Path == info.Manifest.Database.Dump {
						dump += e.Size
					}
				}

				start = time.Now()
				if _, err := backup.Verify(ctx, info.Path); err != nil {
					b.Fatal(err)
				}
				verifyT += time.Since(start)

				start = time.Now()
				if _, err := backup.Restore(ctx, info.Path, backup.Target{DataVolume: restored}); err != nil {
					b.Fatal(err)
				}
				restoreT += time.Since(start)
				os.Remove(info.Path)
			}
			b.StopTimer()
			n := float64(b.N)
			b.ReportMetric(backupT.Seconds()/n, "backup-s")
			b.ReportMetric(verifyT.Seconds()/n, "verify-s")
			b.ReportMetric(restoreT.Seconds()/n, "restore-s")
			b.ReportMetric(float64(size)/n/(1<<20), "archive-MB")
			b.ReportMetric(float64(dump)/n/(1<<20), "dbdump-MB")
		})
	}
}

// seedTasks fills the stand-in's tasks table up to n rows, in batches of
// multi-row INSERTs that every database accepts.
func seedTasks(b *testing.B, in *instance, n int) {
	db := in.open(b)
	defer db.Close()
	var have int
	if err := db.QueryRow("SELECT count(*) FROM tasks").Scan(&have); err != nil {
		b.Fatal(err)
	}
	const batch = 500
	for i := have; i < n; i += batch {
		var rows []string
		for j := i; j < min(i+batch, n); j++ {
			rows = append(rows, fmt.Sprintf("('Task %d: follow up on the quarterly report', '%s', %s, %d, 1, %d, 1, %d, %d)",
				j, strings.Repeat("Some notes about what needs doing. ", 6), boolSQL(j%4 == 0), j%5, j, 1_700_000_000+j, 1_700_000_000+j))
		}
		if _, err := db.Exec("INSERT INTO tasks (title, description, done, priority, project_id, task_index, created_by_id, created, updated) VALUES " + strings.Join(rows, ", ")); err != nil {
			b.Fatal(err)
		}
	}
}

// seedAttachments writes count files of random bytes, total bytes in all.
func seedAttachments(b *testing.B, in *instance, count, total int) {
	rng := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, total/count)
	for i := range count {
		rng.Read(buf)
		p := filepath.Join(in.vol(), datavol.FilesDir, fmt.Sprintf("bench-%d", i))
		write(b, p, buf, vikunjaID, vikunjaID, 0o600)
	}
}
