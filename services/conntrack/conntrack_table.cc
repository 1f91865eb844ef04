// The connection table: kShards chained hash tables, each under its own
// mutex, chosen by the low bits of the (direction-independent) key hash.
//
// Each shard owns its connections in a vector ('slots'); a connection knows
// its slot so removal is a swap with the last one.  The vector is also what
// the incremental sweep walks, with a cursor per shard: expired connections
// are reclaimed a few at a time from the packet threads themselves, and
// their memory goes back to the allocator.
//
// The total is bounded by max_connections through one atomic count, reserved
// before a connection is allocated, so the bound holds with any number of
// threads creating at once.
#include "conntrack.h"

namespace softflow::conntrack {
namespace {

constexpr size_t kInitialBuckets = 16;

size_t bucket_of(const ConnTable::Shard& s, uint32_t hash) {
  // The low bits chose the shard; use the others for the bucket.
  return (hash / ConnTable::kShards) & (s.buckets.size() - 1);
}

}  // namespace

Connection* ConnTable::find(Shard& s, const ConnKey& key, uint32_t hash) const {
  if (s.buckets.empty()) return nullptr;
  for (Connection* c = s.buckets[bucket_of(s, hash)]; c != nullptr; c = c->next_in_bucket)
    if (c->hash == hash && c->key == key) return c;
  return nullptr;
}

void ConnTable::grow(Shard& s) {
  std::vector<Connection*> buckets(std::max(kInitialBuckets, s.buckets.size() * 2), nullptr);
  s.buckets.swap(buckets);
  for (const auto& c : s.slots) {
    Connection*& head = s.buckets[bucket_of(s, c->hash)];
    c->next_in_bucket = head;
    head = c.get();
  }
}

Connection* ConnTable::insert(Shard& s, const ConnKey& key, uint32_t hash) {
  if (count_.fetch_add(1, std::memory_order_relaxed) >= max_connections_) {
    count_.fetch_sub(1, std::memory_order_relaxed);
    return nullptr;
  }
  if (s.slots.size() + 1 > s.buckets.size()) grow(s);  // load factor <= 1
  auto conn = std::make_unique<Connection>();
  conn->key = key;
  conn->hash = hash;
  conn->slot = static_cast<uint32_t>(s.slots.size());
  Connection*& head = s.buckets[bucket_of(s, hash)];
  conn->next_in_bucket = head;
  head = conn.get();
  s.slots.push_back(std::move(conn));
  s.size.store(s.slots.size(), std::memory_order_relaxed);
  return head;
}

void ConnTable::unlink(Shard& s, Connection* c) {
  Connection** link = &s.buckets[bucket_of(s, c->hash)];
  while (*link != c) link = &(*link)->next_in_bucket;
  *link = c->next_in_bucket;
}

void ConnTable::remove(Shard& s, Connection* c) {
  unlink(s, c);
  const uint32_t slot = c->slot;
  if (slot + 1 != s.slots.size()) {
    s.slots[slot] = std::move(s.slots.back());
    s.slots[slot]->slot = slot;
  }
  s.slots.pop_back();  // frees c
  s.size.store(s.slots.size(), std::memory_order_relaxed);
  count_.fetch_sub(1, std::memory_order_relaxed);
}

size_t ConnTable::sweep(uint64_t now_ns, size_t budget) {
  size_t removed = 0;
  size_t shards_left = kShards;
  while (budget > 0 && shards_left-- > 0) {
    Shard& s = shards_[next_sweep_shard_.fetch_add(1, std::memory_order_relaxed) & (kShards - 1)];
    --budget;
    if (s.size.load(std::memory_order_relaxed) == 0) continue;
    std::unique_lock lock(s.mutex, std::try_to_lock);
    if (!lock) continue;  // a packet thread is in there; come back later
    size_t i = s.sweep_cursor;
    while (budget > 0 && !s.slots.empty()) {
      if (i >= s.slots.size()) {
        i = 0;  // wrapped: this shard is done for this round
        break;
      }
      --budget;
      if (s.slots[i]->expired(now_ns)) {
        remove(s, s.slots[i].get());  // the last slot moves into i: look at i again
        ++removed;
      } else {
        ++i;
      }
    }
    s.sweep_cursor = i;
  }
  return removed;
}

size_t ConnTable::flush(uint64_t now_ns, size_t* expired) {
  size_t live = 0;
  for (Shard& s : shards_) {
    std::lock_guard lock(s.mutex);
    for (const auto& c : s.slots) {
      if (c->expired(now_ns))
        ++*expired;
      else
        ++live;
    }
    count_.fetch_sub(s.slots.size(), std::memory_order_relaxed);
    s.slots.clear();
    s.slots.shrink_to_fit();
    s.buckets.clear();
    s.buckets.shrink_to_fit();
    s.sweep_cursor = 0;
    s.size.store(0, std::memory_order_relaxed);
  }
  return live;
}

}  // namespace softflow::conntrack
