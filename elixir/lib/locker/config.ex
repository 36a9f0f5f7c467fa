defmodule Locker.Config do
  @moduledoc """
  Reads the `:locker` application environment, with defaults.

  | key | default | used by |
  | --- | --- | --- |
  | `:autostart` | `true` | `Locker` (application): start the `locker` server |
  | `:masters` | `[node() | Node.list()]` at start | the `locker` server |
  | `:replicas` | `[]` | the `locker` server |
  | `:quorum` (or `:w`) | a majority of the masters | the `locker` server |
  | `:lease_expire_interval` | `1000` ms | the `locker` server's lease sweep |
  | `:lock_expire_interval` | `1000` ms | the `locker` server's promise sweep |
  | `:push_trans_log_interval` | `100` ms | the `locker` server's replication push |
  | `:registry_lease` | `5000` ms | `Locker.Registry`: lease of a registered name |
  | `:registry_extend_interval` | `registry_lease` div 3 | `Locker.Registry.Keeper`: extend period |

  `:quorum` is elixir_locker's key; `:w` is the Erlang application's. When
  both are set, `:quorum` wins. It must be a positive integer: 0, which was
  elixir_locker's default and made every lock succeed without a vote, is
  refused. Mutual exclusion needs a majority (2W > number of masters).
  """

  @typedoc "Options of the `locker` server (keys as in the application environment)."
  @type server_opts :: [
          masters: [node()],
          replicas: [node()],
          quorum: pos_integer(),
          w: pos_integer(),
          lease_expire_interval: pos_integer(),
          lock_expire_interval: pos_integer(),
          push_trans_log_interval: pos_integer()
        ]

  @typedoc "The resolved configuration of a `locker` server."
  @type server :: %{
          masters: [node()],
          replicas: [node()],
          w: pos_integer(),
          w_default?: boolean(),
          args: [pos_integer()]
        }

  @doc """
  Resolves the `locker` server's configuration: `opts` first, then the
  application environment, then the defaults.
  """
  @spec server(keyword()) :: server()
  def server(opts \\ []) do
    get = fn key, default -> Keyword.get(opts, key, env(key, default)) end
    masters = get.(:masters, nil) || [node() | Node.list()]
    replicas = get.(:replicas, [])
    w = get.(:quorum, nil) || get.(:w, nil)

    unless w == nil or (is_integer(w) and w > 0) do
      raise ArgumentError,
            "locker: the quorum (:quorum or :w) must be a positive integer, got: #{inspect(w)} " <>
              "(elixir_locker's default 0 let every lock succeed; leave it unset for a majority)"
    end

    %{
      masters: masters,
      replicas: replicas,
      w: w || majority(masters),
      w_default?: w == nil,
      args: [
        w || majority(masters),
        get.(:lease_expire_interval, 1000),
        get.(:lock_expire_interval, 1000),
        get.(:push_trans_log_interval, 100)
      ]
    }
  end

  @doc "A majority of `masters`: `div(length(masters), 2) + 1`."
  @spec majority([node()]) :: pos_integer()
  def majority(masters), do: div(length(Enum.uniq(masters)), 2) + 1

  @doc "Lease of a name registered through `Locker.Registry`, in ms."
  @spec registry_lease() :: pos_integer()
  def registry_lease, do: env(:registry_lease, 5000)

  @doc "How often `Locker.Registry.Keeper` extends the leases of its names, in ms."
  @spec registry_extend_interval() :: pos_integer()
  def registry_extend_interval do
    env(:registry_extend_interval, nil) || max(div(registry_lease(), 3), 1)
  end

  @doc "Whether the application starts the `locker` server itself."
  @spec autostart?() :: boolean()
  def autostart?, do: env(:autostart, true) == true

  defp env(key, default), do: Application.get_env(:locker, key, default)
end
