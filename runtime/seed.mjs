#!/usr/bin/env node
// Demo data for `make dev`: loaded once the schema exists (see README).
// The marketplace issue fills this in (advisors, reviews, funded wallets).
console.error("[seed] no demo data yet");
