defmodule Locker.Acquire do
  @moduledoc false
  # The attempt loop of `Locker.acquire/2`, run in the caller while it is
  # the head of its key's queue on this node (`Locker.AcquireQueue`).

  alias Locker.{AcquireQueue, Lease}

  # Longest wait of a single lock round.
  @attempt_timeout 5000
  # Longest single wait for a release (the loop waits again after it).
  @max_wait 60_000

  @doc false
  @spec run(term(), keyword()) :: {:ok, Lease.t()} | {:error, :timeout | :no_quorum}
  def run(key, opts) do
    s = %{
      key: key,
      value: Keyword.get_lazy(opts, :value, &self/0),
      lease: Keyword.get(opts, :lease, 5000),
      deadline: deadline(Keyword.get(opts, :timeout, 5000)),
      retry_interval: Keyword.get(opts, :retry_interval, 50),
      jitter: Keyword.get(opts, :jitter, 50)
    }

    s = Map.put(s, :backoff, first_backoff(s))

    case AcquireQueue.join(key, s.deadline) do
      {:ok, ticket} ->
        try do
          attempt(s, Keyword.get(opts, :retries, :infinity))
        after
          AcquireQueue.leave(ticket)
        end

      {:error, :timeout} ->
        {:error, :timeout}
    end
  end

  defp attempt(s, retries) do
    sent = now()
    timeout = min(remaining(s.deadline), @attempt_timeout)

    case :locker.lock_with_token(s.key, s.value, s.lease, timeout) do
      {:ok, token} ->
        expires_at = Lease.validity_end(sent, s.lease)
        lease = %Lease{key: s.key, value: s.value, token: token, expires_at: expires_at}

        if Lease.expired?(lease) do
          # The round took longer than the lease: not a usable lock.
          _ = :locker.release(s.key, s.value)
          retry(s, retries)
        else
          {:ok, lease}
        end

      {:error, :no_quorum} ->
        retry(s, retries)
    end
  end

  defp retry(_s, 0), do: {:error, :no_quorum}

  defp retry(s, retries) do
    cond do
      remaining(s.deadline) == 0 ->
        {:error, :timeout}

      held_here?(s.key) ->
        # Woken by the holder's release or expiry on this node.
        case await_release(s) do
          :ok -> attempt(%{s | backoff: first_backoff(s)}, decrement(retries))
          :timeout -> {:error, :timeout}
        end

      true ->
        # Nothing to wait for on this node: another coordinator's promise,
        # a release or write not yet applied everywhere, masters down, or
        # a node that is neither master nor replica. Pause with jitter so
        # that racing nodes drift apart (as Redlock does), the pauses
        # doubling from 1 ms up to `retry_interval`.
        pause = s.backoff + :rand.uniform(min(s.backoff, s.jitter) + 1) - 1
        Process.sleep(min(pause, remaining(s.deadline)))
        backoff = min(s.backoff * 2, s.retry_interval)
        attempt(%{s | backoff: backoff}, decrement(retries))
    end
  end

  # A node that does not store the key (not a master or a replica of its
  # group) cannot see holders: no short pauses there.
  defp first_backoff(s) do
    if :locker.holds(s.key),
      do: min(1, s.retry_interval),
      else: s.retry_interval
  end

  # Waits until the key is no longer held on this node, or the deadline.
  defp await_release(s) do
    case :locker.wait_for_release(s.key, min(remaining(s.deadline), @max_wait)) do
      {:ok, :released} -> :ok
      {:error, :key_not_locked} -> :ok
    end
  catch
    :exit, {:timeout, _} ->
      cond do
        remaining(s.deadline) == 0 -> :timeout
        held_here?(s.key) -> await_release(s)
        true -> :ok
      end

    :exit, _ ->
      # No local server to wait with: fall back to the retry pause.
      Process.sleep(min(s.retry_interval, remaining(s.deadline)))
      :ok
  end

  defp held_here?(key), do: match?({:ok, _}, :locker.dirty_read(key))

  defp decrement(:infinity), do: :infinity
  defp decrement(n), do: n - 1

  defp now, do: System.monotonic_time(:millisecond)

  defp deadline(:infinity), do: :infinity
  defp deadline(timeout) when is_integer(timeout) and timeout >= 0, do: now() + timeout

  defp remaining(:infinity), do: :infinity
  defp remaining(deadline), do: max(deadline - now(), 0)
end
