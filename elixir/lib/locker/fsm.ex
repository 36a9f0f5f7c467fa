defmodule Locker.Fsm do
  @moduledoc """
  `use Locker.Fsm` for a `:gen_fsm` with a cluster-wide `Locker.Registry`
  name (elixir_locker's API). `:gen_fsm` is deprecated in OTP but still
  shipped (OTP 25); prefer `Locker.Statem` for new code.

      defmodule Door do
        use Locker.Fsm

        def init(_), do: {:ok, :closed, %{}}
        def closed(:open, data), do: {:next_state, :open, data}
      end

      {:ok, pid} = Door.start_link([], name: "door")
      Locker.Fsm.send_event({:via, Locker.Registry, "door"}, :open)

  It injects:

    * `start(args, opts \\\\ [])` and `start_link(args, opts \\\\ [])`: with
      `name: name` in `opts` (or, as elixir_locker's `start_link/2` read
      it, in `args` when `args` is a keyword list) the process is
      registered as `{:via, Locker.Registry, name}`; without a name it
      starts unregistered. Other options go to `:gen_fsm.start/4`;
    * `terminate/3`, which calls `Locker.Registry.unregister/0` (except
      when the process stops for losing its name); overridable, and
      `super(reason, state_name, state)` keeps working;
    * a `handle_info/3` clause that stops the FSM with the reason
      `{:shutdown, {:locker_name_lost, name}}` when it traps exits and the
      keeper gives its name up (see `Locker.Registry`);
    * a `handle_info/3` clause for elixir_locker's
      `{:"$locker_extend_lease", key, value}` message (see
      `Locker.Server`); your own `handle_info/3` clauses get every other
      message;
    * overridable defaults for `handle_event/3`, `handle_sync_event/4`
      (both stop the process with `{:bad_event, event}`) and
      `code_change/4`.

  The functions of this module (`send_event/2`, `sync_send_event/3`, ...)
  call `:gen_fsm` without the compiler's deprecation warning, for code
  compiled with `--warnings-as-errors`.
  """

  # `:gen_fsm` is deprecated: Elixir warns on every direct call to it and
  # has no per-call switch (`:otp_internal` decides), so the calls go
  # through `apply/3` on the module held here.
  @gen_fsm :gen_fsm

  @typedoc "A `:gen_fsm` process: pid, local or global name, `{name, node}` or via tuple."
  @type fsm_ref ::
          pid() | atom() | {atom(), node()} | {:global, term()} | {:via, module(), term()}

  @doc false
  defmacro __using__(opts) do
    quote location: :keep do
      @behaviour :gen_fsm
      @locker_opts Locker.Server.__options__(unquote(opts), "use Locker.Fsm")
      @locker_lease_length @locker_opts[:lease_length]
      @locker_lease_threshold @locker_opts[:lease_threshold]
      @before_compile Locker.Fsm

      @doc "Starts the FSM, registered as `{:via, Locker.Registry, name}` with `name:` in `opts`."
      @spec start(term(), keyword()) :: {:ok, pid()} | :ignore | {:error, term()}
      def start(args, opts \\ []), do: Locker.Fsm.start(__MODULE__, args, opts)

      @doc "Starts and links the FSM, registered as `{:via, Locker.Registry, name}` with `name:` in `opts` or `args`."
      @spec start_link(term(), keyword()) :: {:ok, pid()} | :ignore | {:error, term()}
      def start_link(args, opts \\ []), do: Locker.Fsm.start_link(__MODULE__, args, opts)

      @doc false
      def child_spec(arg) do
        %{id: __MODULE__, start: {__MODULE__, :start_link, [arg]}}
      end

      @impl :gen_fsm
      def handle_info(msg, state_name, state) do
        {:noreply, _} = Locker.Server.__unexpected__(__MODULE__, msg, nil, "handle_info/3")
        {:next_state, state_name, state}
      end

      @impl :gen_fsm
      def handle_event(event, _state_name, state), do: {:stop, {:bad_event, event}, state}

      @impl :gen_fsm
      def handle_sync_event(event, _from, _state_name, state),
        do: {:stop, {:bad_event, event}, state}

      @impl :gen_fsm
      def code_change(_old, state_name, state, _extra), do: {:ok, state_name, state}

      @impl :gen_fsm
      def terminate(reason, _state_name, _state) do
        Locker.Registry.__terminate__(reason)
      end

      defoverridable child_spec: 1,
                     handle_info: 3,
                     handle_event: 3,
                     handle_sync_event: 4,
                     code_change: 4,
                     terminate: 3
    end
  end

  @doc false
  defmacro __before_compile__(_env) do
    quote location: :keep do
      defoverridable handle_info: 3

      # The keeper's exit signal, as a message when the FSM traps exits.
      def handle_info({:EXIT, _, {:shutdown, {:locker_name_lost, _}} = reason}, _name, state),
        do: {:stop, reason, state}

      def handle_info({:"$locker_extend_lease", key, value}, state_name, state) do
        case Locker.Server.__extend__(key, value, @locker_lease_length, @locker_lease_threshold) do
          :ok -> {:next_state, state_name, state}
          error -> {:stop, error, state}
        end
      end

      def handle_info(msg, state_name, state), do: super(msg, state_name, state)
    end
  end

  @doc "Starts `module` as a `:gen_fsm`, named through `Locker.Registry` with `name:` in `opts`."
  @spec start(module(), term(), keyword()) :: {:ok, pid()} | :ignore | {:error, term()}
  def start(module, args, opts) do
    case Keyword.pop(Locker.Server.__opts__!(opts, "Locker.Fsm.start/3"), :name) do
      {nil, opts} -> apply(@gen_fsm, :start, [module, args, opts])
      {name, opts} -> apply(@gen_fsm, :start, [via(name), module, args, opts])
    end
  end

  @doc "Starts and links `module` as a `:gen_fsm`, named with `name:` in `opts` (or in a keyword `args`)."
  @spec start_link(module(), term(), keyword()) :: {:ok, pid()} | :ignore | {:error, term()}
  def start_link(module, args, opts) do
    opts = Locker.Server.__opts__!(opts, "Locker.Fsm.start_link/3")

    case Keyword.pop(opts, :name, args_name(args)) do
      {nil, opts} -> apply(@gen_fsm, :start_link, [module, args, opts])
      {name, opts} -> apply(@gen_fsm, :start_link, [via(name), module, args, opts])
    end
  end

  defp args_name(args) do
    if Keyword.keyword?(args), do: Keyword.get(args, :name), else: nil
  end

  defp via(name), do: {:via, Locker.Registry, Locker.Server.unwrap(name)}

  @doc "`:gen_fsm.send_event/2`."
  @spec send_event(fsm_ref(), term()) :: :ok
  def send_event(fsm, event), do: apply(@gen_fsm, :send_event, [fsm, event])

  @doc "`:gen_fsm.sync_send_event/3`."
  @spec sync_send_event(fsm_ref(), term(), timeout()) :: term()
  def sync_send_event(fsm, event, timeout \\ 5000),
    do: apply(@gen_fsm, :sync_send_event, [fsm, event, timeout])

  @doc "`:gen_fsm.send_all_state_event/2`."
  @spec send_all_state_event(fsm_ref(), term()) :: :ok
  def send_all_state_event(fsm, event), do: apply(@gen_fsm, :send_all_state_event, [fsm, event])

  @doc "`:gen_fsm.sync_send_all_state_event/3`."
  @spec sync_send_all_state_event(fsm_ref(), term(), timeout()) :: term()
  def sync_send_all_state_event(fsm, event, timeout \\ 5000),
    do: apply(@gen_fsm, :sync_send_all_state_event, [fsm, event, timeout])

  @doc "`:gen_fsm.reply/2`."
  @spec reply(term(), term()) :: term()
  def reply(caller, reply), do: apply(@gen_fsm, :reply, [caller, reply])
end
