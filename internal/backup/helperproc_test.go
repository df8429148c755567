package backup_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/vkimg/vkimg/internal/backup"
)

// The tests run some code in a child process (the test binary again): a
// second SQLite writer, and a backup to kill.
const (
	helperEnv     = "VKIMG_BACKUP_TEST_HELPER"
	helperArgsEnv = "VKIMG_BACKUP_TEST_ARGS"
)

func runHelper(kind string) int {
	var err error
	switch kind {
	case "writer":
		err = sqliteWriter(os.Getenv(helperArgsEnv))
	case "create":
		err = createAndHang(os.Getenv(helperArgsEnv))
	default:
		err = fmt.Errorf("unknown helper %q", kind)
	}
	fmt.Fprintln(os.Stderr, err)
	return 1
}

// sqliteWriter commits forever, one row per transaction, printing each
// committed sequence number. wstate.last always equals the number of wlog
// rows in a consistent copy. Auto-checkpoints are off, so every commit
// stays in the WAL: a backup that copied vikunja.db alone would miss them.
func sqliteWriter(path string) error {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=wal_autocheckpoint(0)")
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(1)
	payload := strings.Repeat("x", 2000)
	for seq := 1; ; seq++ {
		tx, err := db.Begin()
		if err != nil {
			return err
		}
		if _, err := tx.Exec("INSERT INTO wlog (seq, payload) VALUES (?, ?)", seq, payload); err != nil {
			return err
		}
		if _, err := tx.Exec("UPDATE wstate SET last = ?", seq); err != nil {
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		fmt.Println(seq)
	}
}

type createArgs struct {
	Source backup.Source
	Dir    string
}

// createAndHang runs a backup that reports its progress and stops for
// good halfway, waiting to be killed.
func createAndHang(args string) error {
	var a createArgs
	if err := json.Unmarshal([]byte(args), &a); err != nil {
		return err
	}
	_, err := backup.Create(context.Background(), a.Source, backup.Options{Dir: a.Dir, Progress: func(done, total int64) {
		if 2*done > total {
			fmt.Println("halfway")
			// Sleep, not select{}: the runtime would call a process
			// whose goroutines all block deadlocked and end it.
			for {
				time.Sleep(time.Hour)
			}
		}
	}})
	if err == nil {
		err = fmt.Errorf("backup finished")
	}
	return err
}
