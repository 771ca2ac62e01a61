"""The run loop: model step -> tool calls -> transcript -> observer -> checkpoint -> stop check.

One sync core for both run shapes. A single-loop run resumes mid-loop from its saved transcript
with no new input; a phased run skips completed phases and restarts the interrupted one from its
start (see ``phases``). How the attempt ends -- and what is written for it -- is decided in one
place, ``outcome.finalize``.

The executor never sleeps and never watches the clock: timing is the critic's job, and the only
way anything outside stops a run is the stop token, checked at every step boundary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pydantic import JsonValue

from executus_worker.core.models import Checkpoint, Message, RunInfo, RunOutcome
from executus_worker.core.outcome import Finish, finalize
from executus_worker.core.phases import RunState, Toolbox, check_phases
from executus_worker.core.ports import (
    Agent,
    CriticWatch,
    Deps,
    Model,
    ModelReply,
    ModelRequest,
    NullCheckpointer,
    NullWatch,
    RunCheckpointer,
)
from executus_worker.core.stop import RunStopped, StopToken
from executus_worker.errors import RunLimitExceeded

log = logging.getLogger(__name__)


def execute(agent: Agent, run: RunInfo, deps: Deps, stop: StopToken) -> RunOutcome:
    """Run (or resume) one attempt of ``run`` and classify how it ended.

    Returns the outcome for every ending the kernel understands; re-raises only foreign
    ``BaseException``s (KeyboardInterrupt, SystemExit) after writing nothing.
    """
    checkpointer = deps.checkpoints.begin(run, stop) or NullCheckpointer()
    return _Execution(agent, run, deps, stop, checkpointer).run()


class _Execution:
    def __init__(
        self,
        agent: Agent,
        run: RunInfo,
        deps: Deps,
        stop: StopToken,
        checkpointer: RunCheckpointer,
    ) -> None:
        self.agent = agent
        self.run_info = run
        self.deps = deps
        self.stop = stop
        self.checkpointer = checkpointer
        self.state = RunState.fresh(run)
        # The state after the last *completed* step: what interrupt/fail/cancel persist, so a
        # half-finished step's messages are never written.
        self.committed: Checkpoint = self.state.snapshot(deps.clock.now())
        self.watch: CriticWatch = NullWatch()

    def run(self) -> RunOutcome:
        try:
            output = self._drive()
        except (Exception, RunStopped) as exc:
            self._close_watch()
            return finalize(self._finish(), exc=exc)
        except BaseException:
            # KeyboardInterrupt, SystemExit: not ours to classify; write nothing, only let the
            # watchdog go so it cannot fire into whatever handles this.
            self._close_watch()
            raise
        self._close_watch()
        return finalize(self._finish(), output=output)

    # -- driving -----------------------------------------------------------------------

    def _drive(self) -> JsonValue:
        run = self.run_info
        loaded = self.checkpointer.load()
        if loaded is not None:
            self.state = RunState.from_checkpoint(run, loaded)
            # Until the first commit, an ending must write back what was loaded, never the
            # empty fresh state (that would wipe the stored transcript).
            self.committed = loaded
        self.watch = self.deps.critic.watch(run, dict(self.state.critic_state), self.stop)
        phases = self.agent.phases(run)
        model = self.agent.model(run)
        tools = Toolbox(run, self.agent.tools(run), self.deps.skills.tools(run))
        step = _Stepper(self, model, tools, self.deps.persona.system_prompt(run))
        self._audit(
            "resumed" if loaded is not None else "started",
            {"iteration": self.state.iteration, "attempt": run.attempt,
             "phased": phases is not None},
        )  # fmt: skip
        if phases is None:
            return self._single_loop(step, resumed=loaded is not None)
        return self._phased(step, check_phases(phases), resumed=loaded is not None)

    def _single_loop(self, step: _Stepper, *, resumed: bool) -> JsonValue:
        if not resumed:
            self.state.transcript.extend(self.agent.seed(self.run_info, None))
        self._commit()
        self.stop.check()
        return self._loop(step, None)

    def _phased(self, step: _Stepper, phases: list[str], *, resumed: bool) -> JsonValue:
        if resumed and self.state.rewind_to_phase_start():
            # Persist the rewind before re-running the phase, so the stored transcript never
            # mixes the interrupted attempt's partial phase with the re-run's messages.
            self._commit(save=True)
        else:
            self._commit()
        self.stop.check()
        remaining = [phase for phase in phases if phase not in self.state.completed_phases]
        for index, phase in enumerate(remaining):
            self.state.begin_phase(phase)
            self.state.transcript.extend(self.agent.seed(self.run_info, phase))
            output = self._loop(step, phase)
            self.state.end_phase(phase, output)
            is_last = index == len(remaining) - 1
            # The boundary is a resume point: always flush it, whatever the throttle says.
            # After the last phase, complete() writes the final state instead.
            self._commit(save=not is_last)
            if not is_last:
                self.stop.check()
        return dict(self.state.phase_outputs)

    def _loop(self, step: _Stepper, phase: str | None) -> JsonValue:
        limit = self.run_info.limits.max_iterations
        while True:
            if self.state.iteration >= limit:
                raise RunLimitExceeded(
                    f"run reached limits.max_iterations={limit} without finishing"
                )
            reply = step(phase)
            if reply.done:
                return reply.output
            self.stop.check()

    # -- helpers -----------------------------------------------------------------------

    def _commit(self, *, save: bool = False, force: bool = True) -> None:
        checkpoint = self.state.snapshot(self.deps.clock.now())
        if save:
            self.checkpointer.save(checkpoint, force=force)
        self.committed = checkpoint

    def _audit(self, event: str, data: dict[str, JsonValue]) -> None:
        _contained(
            "audit", lambda: self.deps.audit.record(self.run_info, event, data), self.run_info
        )

    def _close_watch(self) -> None:
        def settle() -> None:
            # Runtime spent and escalations decided since the last completed step count too:
            # an interrupted run must not get its time or its one extension back on resume.
            state = self.watch.state()
            if state:
                self.committed.critic_state = dict(state)

        _contained("critic state", settle, self.run_info)
        _contained("critic close", self.watch.close, self.run_info)

    def _finish(self) -> Finish:
        return Finish(
            run=self.run_info,
            checkpointer=self.checkpointer,
            stop=self.stop,
            committed=self.committed,
            audit=self.deps.audit,
        )


class _Stepper:
    """One model step with its tool calls; commits it only once it is whole."""

    def __init__(
        self, execution: _Execution, model: Model, tools: Toolbox, system_prompt: str | None
    ) -> None:
        self.ex = execution
        self.model = model
        self.tools = tools
        self.system_prompt = system_prompt

    def __call__(self, phase: str | None) -> ModelReply:
        ex, run, state = self.ex, self.ex.run_info, self.ex.state
        iteration = state.iteration + 1
        ex.watch.step_started(iteration)
        # Budget calls are contained: only its stop (BudgetExceeded, a BaseException) ends a run.
        _contained("budget check", lambda: ex.deps.budget.check(run), run)
        nudges = tuple(ex.watch.nudges())  # the critic asking the agent to wrap up
        request = ModelRequest(
            run=run,
            phase=phase,
            messages=(*state.transcript, *nudges),
            tools=self.tools.specs,
            system_prompt=self.system_prompt,
        )
        # No model call and no tool call starts unless this attempt certainly still owns the
        # run for at least the lease's safety margin (it pauses while that is unknown).
        ex.stop.ensure_owner("model call")
        reply = self.model.complete(request)
        _contained("budget charge", lambda: ex.deps.budget.charge(run, reply.usage), run)
        new: list[Message] = list(nudges)
        if reply.message is not None:
            new.append(reply.message)
            for call in reply.message.tool_calls:
                ex.stop.ensure_owner(f"tool call {call.name}")
                new.append(self.tools.call(run, call, iteration=iteration))
        ex.watch.step_finished(iteration)
        # From here on the step is whole: it joins the transcript and becomes resumable.
        state.transcript.extend(new)
        state.iteration = iteration
        state.critic_state = ex.watch.state()
        _contained(
            "step observer",
            lambda: ex.deps.observer.on_step(run, iteration, tuple(new)),
            run,
        )
        ex._audit(
            "step",
            {"iteration": iteration, "phase": phase, "messages": len(new), "done": reply.done,
             "input_tokens": reply.usage.input_tokens,
             "output_tokens": reply.usage.output_tokens, "cost_usd": reply.usage.cost_usd},
        )  # fmt: skip
        # A finishing step is written by the phase boundary or by complete(), not saved twice.
        ex._commit(save=not reply.done, force=False)
        return reply


def _contained(what: str, call: Callable[[], object], run: RunInfo) -> None:
    """Run an observational hook; its bugs are logged, never allowed to fail the run.

    Only ``Exception`` is contained: stops (BaseException) raised by a hook still unwind the run.
    """
    try:
        call()
    except Exception:
        log.exception("%s failed for run %s (ignored)", what, run.run_id)
