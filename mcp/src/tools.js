import * as z from 'zod/v4';
import { NoTokenError, VikunjaError } from './vikunja.js';

// The task fields an assistant needs; Vikunja's full objects are large.
export function summarizeTask(t) {
  const unset = (d) => (!d || d.startsWith('0001-01-01') ? null : d);
  return {
    id: t.id,
    identifier: t.identifier,
    title: t.title,
    description: t.description,
    done: t.done,
    done_at: unset(t.done_at),
    due_date: unset(t.due_date),
    priority: t.priority,
    project_id: t.project_id,
  };
}

function summarizeProject(p) {
  return { id: p.id, title: p.title, description: p.description, is_archived: p.is_archived };
}

function result(value) {
  return { content: [{ type: 'text', text: JSON.stringify(value, null, 2) }] };
}

// Vikunja's answers become tool errors the assistant can read; anything else
// is a bug and propagates.
function tool(fn) {
  return async (args) => {
    try {
      return result(await fn(args));
    } catch (err) {
      if (err instanceof VikunjaError || err instanceof NoTokenError) {
        return { isError: true, content: [{ type: 'text', text: err.message }] };
      }
      throw err;
    }
  };
}

const taskId = z.number().int().positive().describe('The task id');
const dueDate = z.iso.datetime({ offset: true }).describe('Due date, ISO 8601 (e.g. 2026-12-01T17:00:00Z)');
const priority = z.number().int().min(0).max(5).describe('0 (unset) to 5 (do now)');

export function registerTools(server, vikunja) {
  server.registerTool('list_projects', {
    description: 'List the Vikunja projects the token can see.',
    inputSchema: { include_archived: z.boolean().optional().describe('Also list archived projects') },
    annotations: { readOnlyHint: true },
  }, tool(async ({ include_archived: archived }) => {
    const projects = await vikunja.listProjects();
    return projects.filter((p) => archived || !p.is_archived).map(summarizeProject);
  }));

  server.registerTool('search_tasks', {
    description: 'Search or list tasks across all projects. All filters are optional.',
    inputSchema: {
      query: z.string().optional().describe('Text to look for in task titles and descriptions'),
      project_id: z.number().int().positive().optional().describe('Only tasks of this project'),
      done: z.boolean().optional().describe('true: only done tasks; false: only open tasks'),
      page: z.number().int().positive().optional().describe('Page number, from 1'),
      per_page: z.number().int().min(1).max(50).optional().describe('Tasks per page (max 50)'),
    },
    annotations: { readOnlyHint: true },
  }, tool(async ({ query, project_id: projectId, done, page, per_page: perPage }) => {
    const r = await vikunja.searchTasks({ query, projectId, done, page, perPage });
    return { tasks: r.tasks.map(summarizeTask), page: r.page, total_pages: r.totalPages };
  }));

  server.registerTool('create_task', {
    description: 'Create a task in a project.',
    inputSchema: {
      project_id: z.number().int().positive().describe('The project to add the task to'),
      title: z.string().min(1).describe('The task title'),
      description: z.string().optional(),
      due_date: dueDate.optional(),
      priority: priority.optional(),
    },
  }, tool(async ({ project_id: projectId, title, description, due_date: due, priority: prio }) => {
    const fields = { title };
    if (description !== undefined) fields.description = description;
    if (due !== undefined) fields.due_date = due;
    if (prio !== undefined) fields.priority = prio;
    return summarizeTask(await vikunja.createTask(projectId, fields));
  }));

  server.registerTool('update_task', {
    description: 'Change some fields of a task; fields left out keep their value.',
    inputSchema: {
      task_id: taskId,
      title: z.string().min(1).optional(),
      description: z.string().optional(),
      due_date: dueDate.nullable().optional().describe('New due date, or null to clear it'),
      priority: priority.optional(),
      done: z.boolean().optional(),
      project_id: z.number().int().positive().optional().describe('Move the task to this project'),
    },
  }, tool(async ({ task_id: id, due_date: due, ...rest }) => {
    const changes = Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined));
    if (due !== undefined) changes.due_date = due ?? '0001-01-01T00:00:00Z';
    return summarizeTask(await vikunja.updateTask(id, changes));
  }));

  server.registerTool('complete_task', {
    description: 'Mark a task as done (or, with done=false, open it again).',
    inputSchema: { task_id: taskId, done: z.boolean().optional().describe('Default true') },
    annotations: { idempotentHint: true },
  }, tool(async ({ task_id: id, done = true }) => summarizeTask(await vikunja.updateTask(id, { done }))));
}
