"""The cache schema as numbered migrations, applied in order and recorded in ``migrations``.

The materialised tables follow the seed (messages, messages_fts, knowledge), extended with sessions, verbatim
records, the stored events (for ``rebuild``), the outbox, stream cursors, file offsets and sync state.
A migration is never edited once released: add the next number.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial schema",
        """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            key TEXT UNIQUE NOT NULL,            -- u:<uuid> | m:<message.id>: global identity across files
            hash TEXT NOT NULL,                  -- SHA-256 of content (the seed's dedup hash)
            content TEXT NOT NULL,
            role TEXT NOT NULL,                  -- user | assistant | tool | system
            source_type TEXT NOT NULL DEFAULT 'claude-code',
            source_file TEXT,
            source_line INTEGER,
            created_at TEXT,                     -- indexed_at (the seed's column name)
            occurred_at TEXT,
            session_id TEXT NOT NULL,
            root_session TEXT NOT NULL,
            agent_id TEXT,
            project TEXT,
            tenant TEXT NOT NULL,
            user_id TEXT NOT NULL,
            machine TEXT,
            content_length INTEGER,
            has_code INTEGER,
            has_markdown INTEGER,
            language_hints TEXT,
            model TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cache_read_tokens INTEGER NOT NULL DEFAULT 0,
            cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
            parts INTEGER NOT NULL DEFAULT 1,
            is_sidechain INTEGER NOT NULL DEFAULT 0,
            is_meta INTEGER NOT NULL DEFAULT 0,
            is_prompt INTEGER NOT NULL DEFAULT 0,
            kinds TEXT,
            event_id TEXT NOT NULL
        );
        -- Searches are driven by the FTS index (project/role/time filter the joined rows), so the only other
        -- index is the one `show` and the session views need: every index costs each insert.
        CREATE INDEX messages_session ON messages(root_session, occurred_at);

        CREATE VIRTUAL TABLE messages_fts USING fts5(
            content, content='messages', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2'
        );

        CREATE TABLE sessions (
            session_id TEXT PRIMARY KEY,
            root_session TEXT NOT NULL,
            parent_session TEXT,
            agent_id TEXT,
            tenant TEXT NOT NULL,
            user_id TEXT NOT NULL,
            machine TEXT,
            project TEXT,
            branch TEXT,
            title TEXT,
            title_rank INTEGER NOT NULL DEFAULT 0,
            first_prompt TEXT,
            first_prompt_at TEXT,
            first_at TEXT,
            last_at TEXT,
            message_count INTEGER NOT NULL DEFAULT 0,
            models TEXT NOT NULL DEFAULT '[]',
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cache_read_tokens INTEGER NOT NULL DEFAULT 0,
            cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
            source_file TEXT,
            version TEXT,
            ended_at TEXT,
            ended_count INTEGER
        );
        CREATE INDEX sessions_root ON sessions(root_session);
        CREATE INDEX sessions_last ON sessions(last_at);

        -- Non-conversational records (progress, snapshots, titles, unknown types): not indexed; their verbatim
        -- text lives once, compressed, in the RecordsCaptured event that brought them (events.seq).
        CREATE TABLE records (
            key TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            type TEXT,
            line INTEGER,
            event_seq INTEGER NOT NULL REFERENCES events(seq)
        );
        CREATE INDEX records_session ON records(session_id);

        CREATE TABLE knowledge (
            id INTEGER PRIMARY KEY,
            knowledge_id TEXT UNIQUE NOT NULL,
            message_id INTEGER REFERENCES messages(id),
            knowledge_type TEXT,                 -- decision | pattern | error_solution
            extracted_data TEXT,                 -- JSON
            source_hashes TEXT,
            shared_scope TEXT,
            project TEXT,
            created_at TEXT
        );

        -- Every applied event, local or remote: the source of `cxsync rebuild` and of the outbox.
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            event_id TEXT UNIQUE NOT NULL,
            type TEXT NOT NULL,
            origin TEXT NOT NULL,                -- local | remote
            payload BLOB NOT NULL,
            received_at TEXT NOT NULL
        );

        CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY,
            event_seq INTEGER NOT NULL REFERENCES events(seq),
            stream TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',   -- pending | acked | quarantined
            attempts INTEGER NOT NULL DEFAULT 0,
            cursor BLOB,
            last_error TEXT,
            acked_at TEXT,
            UNIQUE (event_seq, stream)
        );
        CREATE INDEX outbox_pending ON outbox(state, seq);

        CREATE TABLE cursors (
            stream TEXT PRIMARY KEY,
            cursor BLOB,
            updated_at TEXT
        );

        CREATE TABLE files (
            path TEXT PRIMARY KEY,
            kind TEXT,
            session_id TEXT,
            inode INTEGER, dev INTEGER,
            offset INTEGER NOT NULL DEFAULT 0,
            line_no INTEGER NOT NULL DEFAULT 0,
            head_len INTEGER NOT NULL DEFAULT 0,
            head_hash TEXT,
            size INTEGER, mtime REAL,
            malformed INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'active',  -- active | deleted
            updated_at TEXT
        );

        CREATE TABLE state (
            key TEXT PRIMARY KEY,
            value TEXT
        );
        """,
    ),
    (
        2,
        "message counter",
        """
        -- count(*) over a million messages takes longer than `cxsync status` may; apply keeps this exact, in the
        -- same transaction as the rows it counts.
        CREATE TABLE counters (
            name TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        );
        INSERT INTO counters(name, value) SELECT 'messages', count(*) FROM messages;
        """,
    ),
    (
        3,
        "knowledge sharing",
        """
        -- Who an item belongs to and where it came from, for listing and recall without joining messages.
        ALTER TABLE knowledge ADD COLUMN user_id TEXT;
        ALTER TABLE knowledge ADD COLUMN session_id TEXT;
        ALTER TABLE knowledge ADD COLUMN title TEXT;
        ALTER TABLE knowledge ADD COLUMN occurred_at TEXT;
        -- The latest share or unshare of each (item, scope): decided by (time, event id), so every cache that
        -- has seen the same events agrees whatever order they arrived in.
        CREATE TABLE knowledge_shares (
            knowledge_id TEXT NOT NULL,
            scope TEXT NOT NULL,
            project TEXT NOT NULL DEFAULT '',
            shared INTEGER NOT NULL,
            user_id TEXT,
            at TEXT NOT NULL,
            event_id TEXT NOT NULL,
            PRIMARY KEY (knowledge_id, scope, project)
        );
        -- Explained code blocks seen so far, by fingerprint: a pattern is one written in two sessions or more.
        CREATE TABLE knowledge_candidates (
            fingerprint TEXT NOT NULL,
            session_id TEXT NOT NULL,
            message_hash TEXT NOT NULL,
            PRIMARY KEY (fingerprint, session_id)
        );
        """,
    ),
    (
        4,
        "search at scale: time-ordered message ids, text kept once, FTS kept by triggers",
        """
        -- A message's text lives once, in its stored event (compressed, with the verbatim lines): the row keeps
        -- what filters and views need. Ids are time-ordered (apply assigns occurred_at seconds * 256 + a slot),
        -- so the FTS rowid order is recency and --since is a rowid bound. Rows of an older cache keep their ids.
        CREATE TABLE messages_v3 (
            id INTEGER PRIMARY KEY,
            key TEXT UNIQUE NOT NULL,
            hash TEXT NOT NULL,
            role TEXT NOT NULL,
            source_type TEXT NOT NULL DEFAULT 'claude-code',
            source_file TEXT,
            source_line INTEGER,
            created_at TEXT,
            occurred_at TEXT,
            session_id TEXT NOT NULL,
            root_session TEXT NOT NULL,
            agent_id TEXT,
            project TEXT,
            tenant TEXT NOT NULL,
            user_id TEXT NOT NULL,
            machine TEXT,
            content_length INTEGER,
            has_code INTEGER,
            has_markdown INTEGER,
            language_hints TEXT,
            model TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cache_read_tokens INTEGER NOT NULL DEFAULT 0,
            cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
            parts INTEGER NOT NULL DEFAULT 1,
            is_sidechain INTEGER NOT NULL DEFAULT 0,
            is_meta INTEGER NOT NULL DEFAULT 0,
            is_prompt INTEGER NOT NULL DEFAULT 0,
            kinds TEXT,
            event_id TEXT NOT NULL
        );
        -- Contentless with deletes: the index needs no copy of the text to remove or replace a row, and
        -- snippets are cut from the stored event. `idents` holds the parts of CamelCase identifiers.
        CREATE VIRTUAL TABLE messages_fts_v3 USING fts5(
            content, idents, content='', contentless_delete=1,
            tokenize='porter unicode61 remove_diacritics 2'
        );
        INSERT INTO messages_fts_v3(rowid, content, idents) SELECT id, content, cx_idents_of(content) FROM messages;
        INSERT INTO messages_v3 SELECT id, key, hash, role, source_type, source_file, source_line, created_at,
            occurred_at, session_id, root_session, agent_id, project, tenant, user_id, machine, content_length,
            has_code, has_markdown, language_hints, model, input_tokens, output_tokens, cache_read_tokens,
            cache_creation_tokens, parts, is_sidechain, is_meta, is_prompt, kinds, event_id FROM messages;
        DROP TABLE messages_fts;
        DROP TABLE messages;
        ALTER TABLE messages_v3 RENAME TO messages;
        ALTER TABLE messages_fts_v3 RENAME TO messages_fts;
        CREATE INDEX messages_session ON messages(root_session, occurred_at);

        -- The index follows the rows whoever writes them (apply, rebuild, a repair by hand). cx_text(event_id)
        -- is the message text (the one apply is writing, or else decoded from the stored event); cx_idents the
        -- parts of its CamelCase identifiers.
        -- Except while apply inserts a batch set-wise (cx_bulk()): it indexes the batch itself, in one statement.
        CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN NOT cx_bulk() BEGIN
            INSERT INTO messages_fts(rowid, content, idents)
                VALUES (new.id, cx_text(new.event_id), cx_idents(new.event_id));
        END;
        CREATE TRIGGER messages_fts_update AFTER UPDATE OF id, event_id ON messages BEGIN
            DELETE FROM messages_fts WHERE rowid = old.id;
            INSERT INTO messages_fts(rowid, content, idents)
                VALUES (new.id, cx_text(new.event_id), cx_idents(new.event_id));
        END;
        CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            DELETE FROM messages_fts WHERE rowid = old.id;
        END;

        -- Records: one row per key, no second copy of the key in a separate unique index.
        CREATE TABLE records_v3 (
            key TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            type TEXT,
            line INTEGER,
            event_seq INTEGER NOT NULL REFERENCES events(seq)
        ) WITHOUT ROWID;
        INSERT INTO records_v3 SELECT key, session_id, type, line, event_seq FROM records;
        DROP TABLE records;
        ALTER TABLE records_v3 RENAME TO records;
        CREATE INDEX records_session ON records(session_id, line);
        """,
    ),
    (
        5,
        "undecodable events and per-stream pull state",
        """
        -- What a pull read but could not decode or materialise (corrupt, a type from a newer cxsync, a field it
        -- lacks): kept verbatim and skipped, so one event never stalls its stream; `rebuild` (or the agent at
        -- start-up, after an upgrade) tries them again.
        CREATE TABLE undecodable (
            stream TEXT NOT NULL,
            cursor BLOB NOT NULL,
            event_id TEXT,
            payload BLOB NOT NULL,
            error TEXT NOT NULL,
            received_at TEXT NOT NULL,
            PRIMARY KEY (stream, cursor)
        );
        -- Each pull thread owns its stream's row: no read-modify-write of a record shared by every stream.
        ALTER TABLE cursors ADD COLUMN last_pull TEXT;
        ALTER TABLE cursors ADD COLUMN caught_up_at TEXT;
        ALTER TABLE cursors ADD COLUMN behind INTEGER NOT NULL DEFAULT 0;
        """,
    ),
    (
        6,
        "a compression dictionary for the stored events",
        """
        -- zstd dictionaries trained on this cache's own events (cache/compress.py): a payload of codec version 3
        -- names the one it was sealed with. Never edited or deleted.
        CREATE TABLE dictionaries (
            dict_id INTEGER PRIMARY KEY,
            data BLOB NOT NULL,
            created_at TEXT NOT NULL
        );
        """,
    ),
    (
        7,
        "apply indexes the messages it inserts; a larger FTS5 buffer",
        """
        -- A table with an insert trigger makes each insert a statement that may need undoing, so SQLite keeps a
        -- statement journal of every page it touches: 7 GB written for a 100,000-message import (measured).
        -- apply, the only writer of messages, indexes what it inserts itself; an update or delete still
        -- reaches the index through its trigger.
        DROP TRIGGER messages_fts_insert;
        -- FTS5 writes a new segment each time its buffer of pending terms fills (1 MB by default), and merges them
        -- again later: with 16 MB a large import writes and merges far fewer.
        INSERT INTO messages_fts(messages_fts, rank) VALUES ('hashsize', 16777216);
        """,
    ),
]
